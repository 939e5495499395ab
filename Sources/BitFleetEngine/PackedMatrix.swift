import CEngineSupport

/// A matrix of `{±1}` rows packed as UInt64 words: element `j` of a row is bit `j % 64` of word `j / 64`,
/// bit 1 = +1, padding bits zero. Either a view into the memory-mapped file (zero copy, when the tensor's rows are
/// whole words, 8-byte aligned and clean) or a repacked copy owned by the model.
struct PackedMatrix: @unchecked Sendable {
    let base: UnsafePointer<UInt64>
    let rows: Int
    /// Logical row length in bits (K).
    let bits: Int
    /// UInt64 words per row (`ceil(K / 64)`), the row stride.
    let words: Int

    @inline(__always) func row(_ r: Int) -> UnsafePointer<UInt64> { base + r * words }

    /// Number of bytes the matrix occupies in its own allocation (0 when it is a view into the mapping).
    let ownedBytes: Int

    /// Views or repacks `rows` rows of `ceil(bits/8)` bytes at `source`. Repacked storage is appended to `owned`.
    static func load(source: UnsafeRawPointer, rows: Int, bits: Int, owned: inout [UnsafeMutableRawPointer]) -> PackedMatrix {
        let rowBytes = (bits + 7) / 8
        let words = (bits + 63) / 64
        let tailBits = bits % 8
        let tailMask: UInt8 = tailBits == 0 ? 0xFF : UInt8((1 << tailBits) - 1)
        var clean = true
        if tailBits != 0 {
            for r in 0..<rows where source.load(fromByteOffset: r * rowBytes + rowBytes - 1, as: UInt8.self) & ~tailMask != 0 {
                clean = false
                break
            }
        }
        if clean && rowBytes == words * 8 && Int(bitPattern: source) % 8 == 0 {
            return PackedMatrix(base: source.assumingMemoryBound(to: UInt64.self), rows: rows, bits: bits,
                                words: words, ownedBytes: 0)
        }
        let count = max(1, rows * words)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: count * 8, alignment: 64)
        storage.initializeMemory(as: UInt64.self, repeating: 0, count: count)
        for r in 0..<rows {
            let dst = storage + r * words * 8
            dst.copyMemory(from: source + r * rowBytes, byteCount: rowBytes)
            if tailBits != 0 {
                let last = dst.assumingMemoryBound(to: UInt8.self) + rowBytes - 1
                last.pointee &= tailMask   // padding bits may be garbage in foreign files; the spec says zero
            }
        }
        owned.append(storage)
        return PackedMatrix(base: UnsafePointer(storage.assumingMemoryBound(to: UInt64.self)), rows: rows, bits: bits,
                            words: words, ownedBytes: count * 8)
    }

    /// Rows of `bits = levels × unit` bits as a layer after a 2-level one (format v6) reads them: the file's bits
    /// `v·unit …` (level v of the layer before) start on word `v·ceil(unit / 64)`, as that layer's output does in
    /// the engine; the words between the levels stay zero (zero in the activations too, so they add no mismatch).
    /// With one level, or a unit of whole words, the same as `load(source:rows:bits:owned:)`.
    static func load(source: UnsafeRawPointer, rows: Int, bits: Int, unit: Int, levels: Int,
                     owned: inout [UnsafeMutableRawPointer]) -> PackedMatrix {
        precondition(levels * unit == bits, "bits = levels × unit")
        if levels == 1 || unit % 64 == 0 { return load(source: source, rows: rows, bits: bits, owned: &owned) }
        let rowBytes = (bits + 7) / 8, unitWords = (unit + 63) / 64, words = levels * unitWords
        let count = max(1, rows * words)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: count * 8, alignment: 64)
        let w = storage.initializeMemory(as: UInt64.self, repeating: 0, count: count)
        for r in 0..<rows {
            for v in 0..<levels {
                for j in 0..<unit where source.load(fromByteOffset: r * rowBytes + (v * unit + j) / 8, as: UInt8.self)
                    >> UInt8((v * unit + j) % 8) & 1 == 1 {
                    w[r * words + v * unitWords + j / 64] |= 1 << UInt64(j % 64)
                }
            }
        }
        owned.append(storage)
        return PackedMatrix(base: UnsafePointer(w), rows: rows, bits: bits, words: words, ownedBytes: count * 8)
    }

    /// A 2-bit conv's filters (format v5: `[2, rows, ceil(taps/8)]` bytes at `source`, the high sign plane `h`, then
    /// the low one `l`, weight `2·h + l`) as binary rows of `3 × taps` bits: `h`, `h` again, then `l`. A ±1 row over
    /// a window read three times computes `Σ (2·h_t + l_t)·q_t`, so every stem kernel runs them unchanged; the conv
    /// kernels read `h` at bit t and `l` at bit `2·taps + t`.
    static func loadTwoBit(source: UnsafeRawPointer, rows: Int, taps: Int, owned: inout [UnsafeMutableRawPointer]) -> PackedMatrix {
        let rowBytes = (taps + 7) / 8
        let bits = 3 * taps, words = (bits + 63) / 64
        let count = max(1, rows * words)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: count * 8, alignment: 64)
        let w = storage.initializeMemory(as: UInt64.self, repeating: 0, count: count)
        func bit(_ plane: Int, _ r: Int, _ t: Int) -> Bool {
            source.load(fromByteOffset: (plane * rows + r) * rowBytes + t / 8, as: UInt8.self) >> UInt8(t % 8) & 1 == 1
        }
        for r in 0..<rows {
            for t in 0..<taps {
                for (plane, at) in [(0, t), (0, taps + t), (1, 2 * taps + t)] where bit(plane, r, t) {
                    w[r * words + at / 64] |= 1 << UInt64(at % 64)
                }
            }
        }
        owned.append(storage)
        return PackedMatrix(base: UnsafePointer(w), rows: rows, bits: bits, words: words, ownedBytes: count * 8)
    }
}

/// Weight rows re-laid for the C XNOR kernels (`bf_xnor_interleave`): blocks of 8 rows with word k of the 8 rows
/// side by side, one such matrix per expert (`part`), so a kernel's vector lanes each accumulate one row. A layer
/// whose outputs are thresholded also gets, where the AVX2 lookup kernel runs for it (`bf_xnor_lut_used`), that
/// kernel's byte-transposed nibble layout of the same rows and their thresholds (`bf_xnor_lut_layout`), per part.
struct InterleavedMatrix: @unchecked Sendable {
    let base: UnsafePointer<UInt64>
    /// Rows of one part (e.g. one expert's layer).
    let rows: Int
    let words: Int
    /// Words of one part: `ceil(rows / 8) × 8 × words`.
    let partWords: Int
    let parts: Int
    /// The lookup layout of every part, `lookupPartBytes` each; nil where the lookup kernel does not run.
    let lookup: UnsafePointer<UInt8>?
    let lookupPartBytes: Int
    var byteCount: Int { parts * (partWords * 8 + lookupPartBytes) }

    @inline(__always) func part(_ p: Int) -> UnsafePointer<UInt64> { base + p &* partWords }
    @inline(__always) func lookupPart(_ p: Int) -> UnsafePointer<UInt8>? { lookup.map { $0 + p &* lookupPartBytes } }

    /// Interleaves `parts` consecutive groups of `rows` rows of `source` (rows `p × rows …` form part p), and lays
    /// them out for the lookup kernel too when `thresholds` (the XNOR path of a thresholded layer, and the maximum
    /// popcount of each of its `parts × rows` rows, `levels` per row in a 2-level layer: part p's level v at
    /// `(p × levels + v) × rows`) runs it.
    init(_ source: PackedMatrix, parts: Int, thresholds: (path: XNORPath, maxPop: [Int32])? = nil, levels: Int = 1,
         owned: inout [UnsafeMutableRawPointer]) {
        let rows = source.rows / max(1, parts)
        self.rows = rows
        self.words = source.words
        self.parts = parts
        partWords = (rows + 7) / 8 * 8 * source.words
        let count = max(1, parts * partWords)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: count * 8, alignment: 64)
        let words = storage.bindMemory(to: UInt64.self, capacity: count)
        words.initialize(repeating: 0, count: count)
        for p in 0..<parts {
            bf_xnor_interleave(source.row(p * rows), source.words, rows, source.words, words + p * partWords)
        }
        owned.append(storage)
        base = UnsafePointer(words)
        if let (path, maxPop) = thresholds, parts > 0, bf_xnor_lut_used(path.code, rows, source.words) != 0 {
            precondition(maxPop.count == parts * rows * levels, "one threshold per row and level")
            let partBytes = bf_xnor_lut_bytes(rows, source.words, levels)
            let table = UnsafeMutableRawPointer.allocate(byteCount: parts * partBytes, alignment: 64)
                .bindMemory(to: UInt8.self, capacity: parts * partBytes)
            maxPop.withUnsafeBufferPointer { mp in
                for p in 0..<parts {
                    bf_xnor_lut_layout(source.row(p * rows), source.words, rows, source.words,
                                       mp.baseAddress! + p * rows * levels, levels, table + p * partBytes)
                }
            }
            owned.append(UnsafeMutableRawPointer(table))
            lookup = UnsafePointer(table)
            lookupPartBytes = partBytes
        } else {
            lookup = nil
            lookupPartBytes = 0
        }
    }
}
