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
}
