/// The one JSON string decoder of BitFleet, shared by the engine's config reader (`BitFleetEngine/JSON.swift`) and
/// the input decoders (`BitFleetFetch/JSONInputDecoder.swift`): escapes (including surrogate pairs) decoded, control
/// characters refused, UTF-8 validated. Each caller words the errors in its own terms.
public enum JSONString {
    public enum Failure: Error, Equatable, Sendable {
        /// The input ended inside the string.
        case unterminated
        /// The input ended right after a backslash.
        case unterminatedEscape
        /// A raw byte below 0x20.
        case controlCharacter
        /// A backslash followed by a byte that starts no escape; `offset` is that byte.
        case invalidEscape
        /// `\u` not followed by four hex digits.
        case invalidUnicodeEscape
        /// A high surrogate without a low one after it, or a low one alone.
        case unpairedSurrogate
        /// A high surrogate followed by a `\u` escape that is not a low surrogate.
        case invalidSurrogatePair
        /// The decoded bytes are not UTF-8.
        case invalidUTF8
        /// More than `limit` bytes.
        case tooLong(limit: Int)
    }

    /// Decodes the string whose opening quote is at `pos`; on return `pos` is past the closing quote. On failure
    /// `pos` is where the problem was found (the escape's letter for `invalidEscape`).
    public static func decode(_ bytes: UnsafeBufferPointer<UInt8>, at pos: inout Int, end: Int? = nil,
                              limit: Int = .max) throws(Failure) -> String {
        let end = end ?? bytes.count
        pos += 1  // opening quote
        var out: [UInt8] = []
        while true {
            guard pos < end else { throw .unterminated }
            let c = bytes[pos]
            if c == UInt8(ascii: "\"") { pos += 1; break }
            if c < 0x20 { throw .controlCharacter }
            if c != UInt8(ascii: "\\") {
                out.append(c)
                pos += 1
            } else {
                pos += 1
                guard pos < end else { throw .unterminatedEscape }
                let e = bytes[pos]
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    pos += 1
                    var scalar = try hex4(bytes, &pos, end)
                    if scalar >= 0xD800 && scalar < 0xDC00 {
                        guard end - pos >= 2, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                            throw .unpairedSurrogate
                        }
                        pos += 2
                        let low = try hex4(bytes, &pos, end)
                        guard low >= 0xDC00 && low < 0xE000 else { throw .invalidSurrogatePair }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if scalar >= 0xDC00 && scalar < 0xE000 {
                        throw .unpairedSurrogate
                    }
                    // every value left is a valid scalar (surrogates were handled above)
                    out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
                    pos -= 1   // the common `pos += 1` below
                default: throw .invalidEscape
                }
                pos += 1
            }
            if out.count > limit { throw .tooLong(limit: limit) }
        }
        guard let s = String(validating: out, as: UTF8.self) else { throw .invalidUTF8 }
        return s
    }

    private static func hex4(_ bytes: UnsafeBufferPointer<UInt8>, _ pos: inout Int, _ end: Int) throws(Failure) -> UInt32 {
        guard end - pos >= 4 else { throw .invalidUnicodeEscape }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - 48)
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - 87)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - 55)
            default: throw .invalidUnicodeEscape
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }
}
