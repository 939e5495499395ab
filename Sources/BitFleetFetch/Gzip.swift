/// gzip (RFC 1952) over DEFLATE (RFC 1951), in plain Swift: no zlib development package needed, every
/// truncation or corruption is an error (libcurl's own decoder silently returns a truncated body), and the
/// output is capped while decoding (gzip bombs stop at the limit).
public enum Gzip {
    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public enum Kind: Sendable, Equatable { case truncated, corrupt, tooLarge }
        public var kind: Kind
        public var message: String
        public var description: String { message }
        init(_ kind: Kind, _ message: String) {
            self.kind = kind
            self.message = message
        }
    }

    /// Whether `bytes` starts with the gzip magic (1f 8b).
    public static func isGzip(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
    }

    /// Decompress one or more concatenated gzip members; at most `limit` output bytes.
    public static func decompress(_ input: [UInt8], limit: Int) throws(Failure) -> [UInt8] {
        try input.withUnsafeBufferPointer { (src: UnsafeBufferPointer<UInt8>) throws(Failure) -> [UInt8] in
            var out: [UInt8] = []
            out.reserveCapacity(min(limit, max(1024, input.count * 4)))
            var pos = 0
            var member = 0
            while true {
                pos = try readHeader(src, pos)
                let start = out.count
                var inflater = Inflater(src: src, pos: pos, limit: limit)
                try inflater.run(into: &out)
                pos = inflater.bytePosition()
                guard src.count - pos >= 8 else {
                    throw Failure(.truncated, "gzip data is truncated: the 8-byte trailer (CRC-32, length) is missing")
                }
                let crc = le32(src, pos)
                let size = le32(src, pos + 4)
                pos += 8
                let actual = CRC32.checksum(out, from: start)
                guard crc == actual else {
                    throw Failure(.corrupt, "gzip data is corrupt: CRC-32 mismatch in member \(member)")
                }
                guard size == UInt32(truncatingIfNeeded: out.count - start) else {
                    throw Failure(.corrupt, "gzip data is corrupt: length mismatch in member \(member)")
                }
                member += 1
                if pos == src.count { break }
                if src.count - pos >= 2 && src[pos] == 0x1f && src[pos + 1] == 0x8b { continue }
                if src[pos...].allSatisfy({ $0 == 0 }) { break }
                throw Failure(.corrupt, "gzip data is followed by \(src.count - pos) bytes of garbage")
            }
            return out
        }
    }

    /// How many bytes `input` decompresses to, checked fully (CRC and length) and stopped at `limit`.
    /// (The output is produced and dropped: memory use is that of `decompress` with the same limit.)
    public static func decompressedSize(_ input: [UInt8], limit: Int) throws(Failure) -> Int {
        try decompress(input, limit: limit).count
    }

    private static func le32(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> UInt32 {
        UInt32(s[i]) | UInt32(s[i + 1]) << 8 | UInt32(s[i + 2]) << 16 | UInt32(s[i + 3]) << 24
    }

    private static func readHeader(_ s: UnsafeBufferPointer<UInt8>, _ start: Int) throws(Failure) -> Int {
        let truncated = Failure(.truncated, "gzip data is truncated inside the header")
        guard s.count - start >= 10 else { throw truncated }
        guard s[start] == 0x1f, s[start + 1] == 0x8b else { throw Failure(.corrupt, "not gzip data (bad magic)") }
        guard s[start + 2] == 8 else { throw Failure(.corrupt, "unsupported gzip compression method \(s[start + 2])") }
        let flags = s[start + 3]
        guard flags & 0xE0 == 0 else { throw Failure(.corrupt, "gzip header has reserved flags set") }
        var p = start + 10
        if flags & 4 != 0 {   // FEXTRA
            guard s.count - p >= 2 else { throw truncated }
            let xlen = Int(s[p]) | Int(s[p + 1]) << 8
            p += 2
            guard s.count - p >= xlen else { throw truncated }
            p += xlen
        }
        for flag: UInt8 in [8, 16] where flags & flag != 0 {   // FNAME, FCOMMENT: zero-terminated
            while true {
                guard p < s.count else { throw truncated }
                p += 1
                if s[p - 1] == 0 { break }
            }
        }
        if flags & 2 != 0 {   // FHCRC
            guard s.count - p >= 2 else { throw truncated }
            p += 2
        }
        return p
    }
}

enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ data: [UInt8], from start: Int = 0) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            data.withUnsafeBufferPointer { d in
                for i in start..<d.count { c = t[Int((c ^ UInt32(d[i])) & 0xFF)] ^ (c >> 8) }
            }
        }
        return c ^ 0xFFFF_FFFF
    }
}

/// Canonical Huffman code: counts per length, symbols ordered by code, and a 9-bit lookup table.
private struct Huffman {
    static let fastBits = 9
    var count = [Int](repeating: 0, count: 16)
    var symbol: [Int]
    /// Indexed by the next 9 input bits (LSB first): symbol << 4 | length, or 0 when the code is longer.
    var fast = [Int32](repeating: 0, count: 1 << fastBits)
    /// > 0 if the code is incomplete, < 0 if over-subscribed.
    var left = 0

    init(lengths: ArraySlice<Int>) {
        symbol = [Int](repeating: 0, count: lengths.count)
        for l in lengths { count[l] += 1 }
        if count[0] == lengths.count {   // no codes: complete but empty
            left = 0
            return
        }
        var l = 1
        left = 1
        while l <= 15 {
            left <<= 1
            left -= count[l]
            if left < 0 { return }
            l += 1
        }
        var offs = [Int](repeating: 0, count: 16)
        for len in 1..<15 { offs[len + 1] = offs[len] + count[len] }
        for (i, len) in lengths.enumerated() where len != 0 {
            symbol[offs[len]] = i
            offs[len] += 1
        }
        // Fast table: assign canonical codes in order and fill the bit-reversed slots.
        var code = 0
        var index = 0
        for len in 1...15 {
            for _ in 0..<count[len] {
                if len <= Huffman.fastBits {
                    var rev = 0
                    var c = code
                    for _ in 0..<len {
                        rev = rev << 1 | (c & 1)
                        c >>= 1
                    }
                    let entry = Int32(symbol[index] << 4 | len)
                    var slot = rev
                    while slot < 1 << Huffman.fastBits {
                        fast[slot] = entry
                        slot += 1 << len
                    }
                }
                code += 1
                index += 1
            }
            code <<= 1
        }
    }
}

private struct Inflater {
    let src: UnsafeBufferPointer<UInt8>
    var pos: Int
    let limit: Int
    var bitbuf: UInt64 = 0
    var bitcnt = 0

    init(src: UnsafeBufferPointer<UInt8>, pos: Int, limit: Int) {
        self.src = src
        self.pos = pos
        self.limit = limit
    }

    static let truncated = Gzip.Failure(.truncated, "gzip data is truncated: the compressed stream ends early")
    static func corrupt(_ why: String) -> Gzip.Failure { Gzip.Failure(.corrupt, "gzip data is corrupt: \(why)") }

    static let lbase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lext = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let dbase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    static let dext = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
    static let order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    static let fixedLen: Huffman = {
        var l = [Int](repeating: 8, count: 288)
        for i in 144..<256 { l[i] = 9 }
        for i in 256..<280 { l[i] = 7 }
        return Huffman(lengths: l[...])
    }()
    static let fixedDist = Huffman(lengths: [Int](repeating: 5, count: 30)[...])

    @inline(__always) mutating func refill() {
        while bitcnt <= 56 && pos < src.count {
            bitbuf |= UInt64(src[pos]) << UInt64(bitcnt)
            pos += 1
            bitcnt += 8
        }
    }

    @inline(__always) mutating func bits(_ n: Int) throws(Gzip.Failure) -> Int {
        if bitcnt < n {
            refill()
            if bitcnt < n { throw Inflater.truncated }
        }
        let v = Int(bitbuf & ((1 << UInt64(n)) - 1))
        bitbuf >>= UInt64(n)
        bitcnt -= n
        return v
    }

    /// The input position of the first byte after the deflate stream (after byte-aligning).
    mutating func bytePosition() -> Int {
        let drop = bitcnt & 7
        bitbuf >>= UInt64(drop)
        bitcnt -= drop
        return pos - bitcnt / 8
    }

    mutating func decode(_ h: Huffman) throws(Gzip.Failure) -> Int {
        if bitcnt < 15 { refill() }
        let e = Int(h.fast[Int(bitbuf & UInt64((1 << Huffman.fastBits) - 1))])
        if e != 0 {
            let len = e & 15
            if len > bitcnt { throw Inflater.truncated }
            bitbuf >>= UInt64(len)
            bitcnt -= len
            return e >> 4
        }
        var code = 0
        var first = 0
        var index = 0
        for len in 1...15 {
            guard len <= bitcnt else { throw Inflater.truncated }
            code |= Int((bitbuf >> UInt64(len - 1)) & 1)
            let count = h.count[len]
            if code - count < first {
                bitbuf >>= UInt64(len)
                bitcnt -= len
                return h.symbol[index + (code - first)]
            }
            index += count
            first += count
            first <<= 1
            code <<= 1
        }
        throw Inflater.corrupt("invalid Huffman code")
    }

    mutating func run(into out: inout [UInt8]) throws(Gzip.Failure) {
        let base = out.count   // back-references may not reach into an earlier gzip member's output
        var last = 0
        repeat {
            last = try bits(1)
            let type = try bits(2)
            switch type {
            case 0: try stored(into: &out)
            case 1: try codes(into: &out, Inflater.fixedLen, Inflater.fixedDist, base: base)
            case 2:
                let (l, d) = try dynamicTables()
                try codes(into: &out, l, d, base: base)
            default: throw Inflater.corrupt("invalid block type 3")
            }
        } while last == 0
    }

    mutating func stored(into out: inout [UInt8]) throws(Gzip.Failure) {
        let drop = bitcnt & 7
        bitbuf >>= UInt64(drop)
        bitcnt -= drop
        let len = try bits(16)
        let nlen = try bits(16)
        guard len == (~nlen & 0xFFFF) else { throw Inflater.corrupt("stored block length check failed") }
        guard out.count + len <= limit else { throw tooLarge() }
        var remaining = len
        while remaining > 0 && bitcnt >= 8 {
            out.append(UInt8(try bits(8)))
            remaining -= 1
        }
        if remaining > 0 {
            guard src.count - pos >= remaining else { throw Inflater.truncated }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: src[pos..<(pos + remaining)]))
            pos += remaining
        }
    }

    func tooLarge() -> Gzip.Failure {
        Gzip.Failure(.tooLarge, "decompressed data exceeds the limit of \(limit) bytes")
    }

    mutating func dynamicTables() throws(Gzip.Failure) -> (Huffman, Huffman) {
        let nlen = try bits(5) + 257
        let ndist = try bits(5) + 1
        let ncode = try bits(4) + 4
        guard nlen <= 286, ndist <= 30 else { throw Inflater.corrupt("too many length or distance codes") }
        var lengths = [Int](repeating: 0, count: 320)
        for i in 0..<ncode { lengths[Inflater.order[i]] = try bits(3) }
        let lencode = Huffman(lengths: lengths[0..<19])
        guard lencode.left == 0 else { throw Inflater.corrupt("incomplete code-length code") }
        var index = 0
        while index < nlen + ndist {
            var symbol = try decode(lencode)
            if symbol < 16 {
                lengths[index] = symbol
                index += 1
            } else {
                var len = 0
                if symbol == 16 {
                    guard index > 0 else { throw Inflater.corrupt("repeat with no previous length") }
                    len = lengths[index - 1]
                    symbol = 3 + (try bits(2))
                } else if symbol == 17 {
                    symbol = 3 + (try bits(3))
                } else {
                    symbol = 11 + (try bits(7))
                }
                guard index + symbol <= nlen + ndist else { throw Inflater.corrupt("too many code lengths") }
                for _ in 0..<symbol {
                    lengths[index] = len
                    index += 1
                }
            }
        }
        guard lengths[256] != 0 else { throw Inflater.corrupt("no end-of-block code") }
        let l = Huffman(lengths: lengths[0..<nlen])
        guard l.left >= 0, l.left == 0 || nlen - l.count[0] == 1 else {
            throw Inflater.corrupt("invalid literal/length code lengths")
        }
        let d = Huffman(lengths: lengths[nlen..<(nlen + ndist)])
        guard d.left >= 0, d.left == 0 || ndist - d.count[0] == 1 else {
            throw Inflater.corrupt("invalid distance code lengths")
        }
        return (l, d)
    }

    mutating func codes(into out: inout [UInt8], _ lencode: Huffman, _ distcode: Huffman, base: Int) throws(Gzip.Failure) {
        while true {
            var symbol = try decode(lencode)
            if symbol < 256 {
                guard out.count < limit else { throw tooLarge() }
                out.append(UInt8(symbol))
            } else if symbol == 256 {
                return
            } else {
                symbol -= 257
                guard symbol < 29 else { throw Inflater.corrupt("invalid length symbol") }
                let len = Inflater.lbase[symbol] + (try bits(Inflater.lext[symbol]))
                let dsym = try decode(distcode)
                guard dsym < 30 else { throw Inflater.corrupt("invalid distance symbol") }
                let dist = Inflater.dbase[dsym] + (try bits(Inflater.dext[dsym]))
                guard dist <= out.count - base else { throw Inflater.corrupt("distance too far back") }
                guard out.count + len <= limit else { throw tooLarge() }
                let from = out.count - dist
                for i in 0..<len { out.append(out[from + i]) }   // element-wise: overlapping copies repeat
            }
        }
    }
}
