#if canImport(JSONText)
import JSONText  // (Ops/fuzz compiles JSONString.swift into this module instead)
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// JSON and NDJSON inputs, parsed by a strict byte-level scanner (RFC 8259 numbers and strings).
///
/// JSON: `[0.1, 0.2, …]` (one sample), `[[…], […]]` (many), or `[{"custom_id": "a", "input": […]}, …]`.
/// NDJSON: one sample per line, each `[…]` or `{"custom_id": "a", "input": […]}` (other keys are ignored);
/// blank lines are skipped; custom_id values must be unique strings.
enum JSONInputDecoder {
    static let maxCustomIDBytes = 512

    static func decodeJSON(_ body: [UInt8], features: Int, maxSamples: Int) throws(DecodeError) -> InputBatch {
        try body.withUnsafeBufferPointer { (buf: UnsafeBufferPointer<UInt8>) throws(DecodeError) -> InputBatch in
            var s = Scanner(bytes: buf, start: 0, end: buf.count, line: nil)
            s.skipBOM()
            s.skipSpace()
            guard s.peek() == UInt8(ascii: "[") else {
                throw s.fail("expected '[' (a JSON array of numbers or of samples)", found: true)
            }
            s.pos += 1
            s.skipSpace()
            var values: [Float] = []
            var ids: [String?] = []
            var seen: [String: Int] = [:]
            var samples = 0
            switch s.peek() {
            case UInt8(ascii: "]"):
                throw DecodeError("input has no samples (empty JSON array)")
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                while true {
                    guard samples < maxSamples else {
                        throw DecodeError("input has more than \(maxSamples) samples (the limit)", sampleIndex: samples)
                    }
                    s.skipSpace()
                    if try !s.sample(into: &values, ids: &ids, seen: &seen, index: samples, features: features) {
                        guard let c = s.peek() else { throw s.fail("unexpected end of input in the top-level array") }
                        throw DecodeError(
                            "sample \(samples) is not an array of numbers (ragged input: \(s.describe(c)) next to arrays)",
                            sampleIndex: samples)
                    }
                    samples += 1
                    s.skipSpace()
                    guard let sep = s.peek() else { throw s.fail("unexpected end of input: missing ']'") }
                    s.pos += 1
                    if sep == UInt8(ascii: "]") { break }
                    guard sep == UInt8(ascii: ",") else {
                        s.pos -= 1
                        throw s.fail("expected ',' or ']' after sample \(samples - 1)", found: true)
                    }
                }
            default:
                s.pos -= 1
                try s.numberRow(into: &values, sample: 0, features: features)
                samples = 1
                ids.append(nil)
            }
            s.skipSpace()
            if s.pos < s.end {
                throw s.fail("unexpected data after the JSON array", found: true)
            }
            return InputBatch(
                samples: samples, features: features, values: .float32(values),
                customIDs: ids.contains { $0 != nil } ? ids : nil,
                format: .json)
        }
    }

    static func decodeNDJSON(_ body: [UInt8], features: Int, maxSamples: Int) throws(DecodeError) -> InputBatch {
        try body.withUnsafeBufferPointer { (buf: UnsafeBufferPointer<UInt8>) throws(DecodeError) -> InputBatch in
            var values: [Float] = []
            var ids: [String?] = []
            var seen: [String: Int] = [:]
            var samples = 0
            var lineStart = 0
            var lineNo = 0
            if buf.count >= 3 && buf[0] == 0xef && buf[1] == 0xbb && buf[2] == 0xbf { lineStart = 3 }
            while lineStart < buf.count {
                lineNo += 1
                var lineEnd = lineStart
                while lineEnd < buf.count && buf[lineEnd] != 0x0a { lineEnd += 1 }
                var s = Scanner(bytes: buf, start: lineStart, end: lineEnd, line: lineNo)
                s.skipSpace()
                if s.pos < s.end {
                    guard samples < maxSamples else {
                        throw DecodeError("input has more than \(maxSamples) samples (the limit)", sampleIndex: samples)
                    }
                    if try !s.sample(into: &values, ids: &ids, seen: &seen, index: samples, features: features) {
                        throw s.fail("expected '[' or '{' to start sample \(samples)", found: true)
                    }
                    s.skipSpace()
                    if s.pos < s.end {
                        throw s.fail("unexpected data after sample \(samples)", found: true)
                    }
                    samples += 1
                }
                lineStart = lineEnd + 1
            }
            guard samples > 0 else { throw DecodeError("input has no samples (no non-blank NDJSON lines)") }
            return InputBatch(samples: samples, features: features, values: .float32(values), customIDs: ids, format: .ndjson)
        }
    }
}

private struct Scanner {
    let bytes: UnsafeBufferPointer<UInt8>
    var pos: Int
    let end: Int
    let lineStart: Int
    let line: Int?

    /// One sample at the cursor, for JSON arrays and NDJSON lines alike: a number row, or an object with
    /// `custom_id` and `features`; appends its values and id (nil for a row). A custom_id already used is an error.
    /// Returns false, consuming nothing, when the next byte starts neither.
    mutating func sample(into values: inout [Float], ids: inout [String?], seen: inout [String: Int], index: Int,
                         features: Int) throws(DecodeError) -> Bool {
        let c = peek()
        if c == UInt8(ascii: "[") {
            try numberRow(into: &values, sample: index, features: features)
            ids.append(nil)
            return true
        }
        guard c == UInt8(ascii: "{") else { return false }
        let id = try sampleObject(into: &values, sample: index, features: features)
        if let id {
            if let first = seen[id] {
                throw DecodeError(
                    "\(line.map { "line \($0): " } ?? "")sample \(index) has duplicate custom_id \"\(id)\" (first used by sample \(first))",
                    sampleIndex: index)
            }
            seen[id] = index
        }
        ids.append(id)
        return true
    }

    init(bytes: UnsafeBufferPointer<UInt8>, start: Int, end: Int, line: Int?) {
        self.bytes = bytes
        self.pos = start
        self.end = end
        self.lineStart = start
        self.line = line
    }

    @inline(__always) func peek() -> UInt8? { pos < end ? bytes[pos] : nil }

    mutating func skipBOM() {
        if end - pos >= 3 && bytes[pos] == 0xef && bytes[pos + 1] == 0xbb && bytes[pos + 2] == 0xbf { pos += 3 }
    }

    @inline(__always) mutating func skipSpace() {
        while pos < end {
            let c = bytes[pos]
            if c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09 { pos += 1 } else { break }
        }
    }

    /// What starts at `pos` when it is `c`, for messages ("an array", "'nope'").
    func describe(_ c: UInt8?) -> String {
        guard let c else { return "end of input" }
        func word() -> String {
            var i = pos
            while i < end, i - pos < 16, (bytes[i] >= 0x41 && bytes[i] <= 0x5a) || (bytes[i] >= 0x61 && bytes[i] <= 0x7a) { i += 1 }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[pos..<i]), as: UTF8.self)
        }
        let isLetter = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)
        if isLetter && pos < end && bytes[pos] == c {
            switch word() {
            case "true", "false": return "a boolean"
            case "null": return "null"
            case let w: return "'\(w)'"
            }
        }
        switch c {
        case UInt8(ascii: "["): return "an array"
        case UInt8(ascii: "{"): return "an object"
        case UInt8(ascii: "\""): return "a string"
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return "a number"
        case 0x20...0x7e: return "'\(Character(Unicode.Scalar(c)))'"
        default: return "byte 0x\(String(c, radix: 16))"
        }
    }

    func location() -> String {
        if let line { return "line \(line) column \(pos - lineStart + 1)" }
        return "byte \(pos)"
    }

    func fail(_ what: String, found: Bool = false, sample: Int? = nil) -> DecodeError {
        let f = found ? " (found \(describe(peek())))" : ""
        return DecodeError("invalid JSON at \(location()): \(what)\(f)", sampleIndex: sample)
    }

    /// `[n, n, …]` appended to `values`; exactly `features` finite numbers.
    mutating func numberRow(into values: inout [Float], sample: Int, features: Int) throws(DecodeError) {
        guard peek() == UInt8(ascii: "[") else { throw fail("expected '[' to start sample \(sample)", found: true, sample: sample) }
        pos += 1
        let before = values.count
        if values.capacity < before + features { values.reserveCapacity(Swift.max(before + features, values.capacity * 2)) }
        var count = 0
        skipSpace()
        if peek() == UInt8(ascii: "]") {
            pos += 1
            throw DecodeError("\(line.map { "line \($0): " } ?? "")sample \(sample) has 0 features, model expects \(features)", sampleIndex: sample)
        }
        // the row's slots first, then the values written in place: `append` per value checked the array's
        // uniqueness (an out-of-line call) every time
        values.append(contentsOf: repeatElement(0, count: features))
        try values.withUnsafeMutableBufferPointer { (buffer) throws(DecodeError) in
            let row = buffer.baseAddress! + before
            while true {
                skipSpace()
                let v: Float
                if let plain = plainNumber() { v = plain } else { v = try number(sample: sample, feature: count) }
                if count < features { row[count] = v }
                count += 1
                skipSpace()
                guard let c = peek() else { throw fail("unexpected end of input inside sample \(sample)", sample: sample) }
                pos += 1
                if c == UInt8(ascii: "]") { break }
                guard c == UInt8(ascii: ",") else {
                    pos -= 1
                    throw fail("expected ',' or ']' in sample \(sample)", found: true, sample: sample)
                }
            }
        }
        if count != features {
            values.removeSubrange(before...)
            throw DecodeError(
                "\(line.map { "line \($0): " } ?? "")sample \(sample) has \(count) features, model expects \(features)",
                sampleIndex: sample)
        }
    }

    /// `{"custom_id": "…", "input": […], …}`; returns the custom_id (nil when absent or null).
    mutating func sampleObject(into values: inout [Float], sample: Int, features: Int) throws(DecodeError) -> String? {
        pos += 1   // {
        var id: String? = nil
        var sawID = false
        var sawInput = false
        skipSpace()
        if peek() == UInt8(ascii: "}") {
            pos += 1
            throw DecodeError("\(line.map { "line \($0): " } ?? "")sample \(sample) is an object without an \"input\" array", sampleIndex: sample)
        }
        while true {
            skipSpace()
            guard peek() == UInt8(ascii: "\"") else { throw fail("expected a key string in sample \(sample)", found: true, sample: sample) }
            let key = try string(sample: sample, limit: 256)
            skipSpace()
            guard peek() == UInt8(ascii: ":") else { throw fail("expected ':' after key \"\(key)\"", found: true, sample: sample) }
            pos += 1
            skipSpace()
            switch key {
            case "custom_id":
                if sawID { throw fail("duplicate key \"custom_id\" in sample \(sample)", sample: sample) }
                sawID = true
                if peek() == UInt8(ascii: "\"") {
                    id = try string(sample: sample, limit: JSONInputDecoder.maxCustomIDBytes)
                } else if try literal("null") {
                    id = nil
                } else {
                    throw fail("custom_id of sample \(sample) must be a string", found: true, sample: sample)
                }
            case "input":
                if sawInput { throw fail("duplicate key \"input\" in sample \(sample)", sample: sample) }
                sawInput = true
                guard peek() == UInt8(ascii: "[") else {
                    throw fail("\"input\" of sample \(sample) must be an array of numbers", found: true, sample: sample)
                }
                try numberRow(into: &values, sample: sample, features: features)
            default:
                try skipValue(depth: 0, sample: sample)
            }
            skipSpace()
            guard let c = peek() else { throw fail("unexpected end of input inside sample \(sample)", sample: sample) }
            pos += 1
            if c == UInt8(ascii: "}") { break }
            guard c == UInt8(ascii: ",") else {
                pos -= 1
                throw fail("expected ',' or '}' in sample \(sample)", found: true, sample: sample)
            }
        }
        guard sawInput else {
            throw DecodeError("\(line.map { "line \($0): " } ?? "")sample \(sample) is an object without an \"input\" array", sampleIndex: sample)
        }
        return id
    }

    mutating func literal(_ word: StaticString) throws(DecodeError) -> Bool {
        let n = word.utf8CodeUnitCount
        guard end - pos >= n else { return false }
        let w = word.utf8Start
        for i in 0..<n where bytes[pos + i] != w[i] { return false }
        pos += n
        return true
    }

    mutating func skipValue(depth: Int, sample: Int) throws(DecodeError) {
        guard depth < 64 else { throw fail("nesting too deep", sample: sample) }
        skipSpace()
        guard let c = peek() else { throw fail("unexpected end of input", sample: sample) }
        switch c {
        case UInt8(ascii: "\""): _ = try string(sample: sample, limit: Int.max)
        case UInt8(ascii: "["), UInt8(ascii: "{"):
            let close = c == UInt8(ascii: "[") ? UInt8(ascii: "]") : UInt8(ascii: "}")
            pos += 1
            skipSpace()
            if peek() == close { pos += 1; return }
            while true {
                skipSpace()
                if close == UInt8(ascii: "}") {
                    guard peek() == UInt8(ascii: "\"") else { throw fail("expected a key string", found: true, sample: sample) }
                    _ = try string(sample: sample, limit: Int.max)
                    skipSpace()
                    guard peek() == UInt8(ascii: ":") else { throw fail("expected ':'", found: true, sample: sample) }
                    pos += 1
                }
                try skipValue(depth: depth + 1, sample: sample)
                skipSpace()
                guard let d = peek() else { throw fail("unexpected end of input", sample: sample) }
                pos += 1
                if d == close { return }
                guard d == UInt8(ascii: ",") else { pos -= 1; throw fail("expected ',' or '\(Character(Unicode.Scalar(close)))'", found: true, sample: sample) }
            }
        case UInt8(ascii: "t"):
            if try !literal("true") { throw fail("invalid literal", sample: sample) }
        case UInt8(ascii: "f"):
            if try !literal("false") { throw fail("invalid literal", sample: sample) }
        case UInt8(ascii: "n"):
            if try !literal("null") { throw fail("invalid literal", sample: sample) }
        default:
            _ = try number(sample: sample, feature: nil)
        }
    }

    /// A JSON string (after the opening quote check), escapes decoded, UTF-8 validated.
    mutating func string(sample: Int, limit: Int) throws(DecodeError) -> String {
        do {
            return try JSONString.decode(bytes, at: &pos, end: end, limit: limit)
        } catch {
            switch error {
            case .unterminated, .unterminatedEscape: throw fail("unterminated string", sample: sample)
            case .controlCharacter: throw fail("control character in string", sample: sample)
            case .invalidEscape: throw fail("invalid escape in string", sample: sample)
            case .invalidUnicodeEscape: throw fail("invalid \\u escape", sample: sample)
            case .unpairedSurrogate, .invalidSurrogatePair: throw fail("unpaired surrogate in string", sample: sample)
            case .invalidUTF8: throw fail("string is not valid UTF-8", sample: sample)
            case .tooLong(let limit): throw fail("string longer than \(limit) bytes", sample: sample)
            }
        }
    }

    /// 10^e for 0 ≤ e ≤ 22 (every one an exact Double). A switch of constants, which the compiler turns into a table
    /// lookup: a static array cost a `swift_once` call and a bounds check per number in the decoder's profile.
    @inline(__always) static func powerOf10(_ e: Int) -> Double {
        switch e {
        case 0: 1e0
        case 1: 1e1
        case 2: 1e2
        case 3: 1e3
        case 4: 1e4
        case 5: 1e5
        case 6: 1e6
        case 7: 1e7
        case 8: 1e8
        case 9: 1e9
        case 10: 1e10
        case 11: 1e11
        case 12: 1e12
        case 13: 1e13
        case 14: 1e14
        case 15: 1e15
        case 16: 1e16
        case 17: 1e17
        case 18: 1e18
        case 19: 1e19
        case 20: 1e20
        case 21: 1e21
        default: 1e22
        }
    }

    /// 10^−e for 1 ≤ e ≤ 22, each the Double nearest to it (not exact). Multiplying by it instead of dividing by 10^e
    /// is used only where the result is an approximation anyway (16–19 digits, see `nearFloatMidpoint`): the divide's
    /// latency was the largest single cost of a long number after the table lookup was fixed.
    @inline(__always) static func reciprocalPowerOf10(_ e: Int) -> Double {
        switch e {
        case 1: 1e-1
        case 2: 1e-2
        case 3: 1e-3
        case 4: 1e-4
        case 5: 1e-5
        case 6: 1e-6
        case 7: 1e-7
        case 8: 1e-8
        case 9: 1e-9
        case 10: 1e-10
        case 11: 1e-11
        case 12: 1e-12
        case 13: 1e-13
        case 14: 1e-14
        case 15: 1e-15
        case 16: 1e-16
        case 17: 1e-17
        case 18: 1e-18
        case 19: 1e-19
        case 20: 1e-20
        case 21: 1e-21
        default: 1e-22
        }
    }

    /// The value of the eight ASCII digits at `p`, or nil when any of the eight bytes is not a digit.
    @inline(__always) static func eightDigits(_ p: UnsafePointer<UInt8>) -> UInt64? {
        let chunk = UInt64(littleEndian: UnsafeRawPointer(p).loadUnaligned(as: UInt64.self))
        // Every byte 0x30…0x39: high nibble 3, and adding 6 keeps it 3.
        guard chunk & 0xF0F0_F0F0_F0F0_F0F0 == 0x3030_3030_3030_3030,
              (chunk &+ 0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0 == 0x3030_3030_3030_3030 else { return nil }
        var v = chunk & 0x0F0F_0F0F_0F0F_0F0F
        v = (v &* 2561) >> 8                                  // pairs: 10 × first + second
        v = ((v & 0x00FF_00FF_00FF_00FF) &* 6_553_601) >> 16   // fours
        return ((v & 0x0000_FFFF_0000_FFFF) &* 42_949_672_960_001) >> 32
    }

    /// True when `value` is within 16 Double ulps of a point halfway between two adjacent Floats: there an
    /// approximation a few ulps off could round to the other Float than the correctly rounded Double does. The
    /// approximations checked with it are off by at most 3.5 ulps from strtod's Double: the 64-bit mantissa rounded
    /// to a Double (½ ulp), times 10^−e rounded (½), the product rounded (½), relative errors that reach 3 ulps at the
    /// top of a binade, and strtod's own ½ ulp from the exact decimal.
    static func nearFloatMidpoint(_ value: Double) -> Bool {
        // A Double has 29 more fraction bits than a Float; halfway between two Floats they read 1000…0.
        let low = Int(value.bitPattern & 0x1FFF_FFFF)
        return abs(low - 0x1000_0000) <= 16
    }

    /// The digits after a decimal point at `p` (up to `end`) appended to `mantissa`: eight at a time while there are
    /// eight (SWAR: one 64-bit load, checked and converted in a few multiplications), then one at a time. `digits`
    /// counts the significant ones (not the zeros before the first non-zero digit), `exp10` goes down by one per
    /// digit; `p` ends after the last digit.
    @inline(__always) static func fractionDigits(_ base: UnsafePointer<UInt8>, _ p: inout Int, _ end: Int,
                                                 _ mantissa: inout UInt64, _ digits: inout Int, _ exp10: inout Int) {
        while end - p >= 8, let eight = eightDigits(base + p) {
            if mantissa == 0 {
                // significant digits of the eight: those after its leading '0's (the first character is the
                // lowest byte; XOR with "00000000" leaves zero bytes for them)
                let chars = UnsafeRawPointer(base + p).loadUnaligned(as: UInt64.self).littleEndian
                digits += 8 - (chars ^ 0x3030_3030_3030_3030).trailingZeroBitCount / 8
            } else {
                digits += 8
            }
            mantissa = mantissa &* 100_000_000 &+ eight
            exp10 -= 8
            p += 8
        }
        while p < end {
            let d = base[p] &- 48
            if d > 9 { break }
            if mantissa != 0 || d != 0 { digits += 1 }
            mantissa = mantissa &* 10 &+ UInt64(d)
            exp10 -= 1
            p += 1
        }
    }

    /// The common case of `number`, inlined into the row loop: `-?(0|[1-9][0-9]*)(.[0-9]+)?` without an exponent, at
    /// most 19 significant digits and 22 fraction digits, as numpy and most writers print pixels and features. The
    /// same arithmetic as `number`'s fast path, so the same Float; nil (nothing consumed) for anything else, which
    /// `number` then parses or rejects with its message. In the worker's profile `number` was a tenth of a job's CPU:
    /// most of it the call, its frame and the paths this case never takes.
    @inline(__always) mutating func plainNumber() -> Float? {
        let base = bytes.baseAddress!
        var p = pos
        var negative = false
        if p < end && base[p] == UInt8(ascii: "-") { negative = true; p += 1 }
        guard p < end else { return nil }
        var mantissa: UInt64 = 0
        var digits = 0
        let first = base[p]
        if first == UInt8(ascii: "0") {
            p += 1
        } else if first &- 49 < 9 {
            while p < end {
                let d = base[p] &- 48
                if d > 9 { break }
                mantissa = mantissa &* 10 &+ UInt64(d)
                digits += 1
                p += 1
            }
        } else {
            return nil
        }
        var exp10 = 0
        if p < end && base[p] == UInt8(ascii: ".") {
            p += 1
            let d0 = p
            Self.fractionDigits(base, &p, end, &mantissa, &digits, &exp10)
            if p == d0 { return nil }
        }
        if p < end && base[p] | 0x20 == UInt8(ascii: "e") { return nil }
        guard digits <= 19, exp10 >= -22 else { return nil }
        var v = Double(mantissa)
        if mantissa != 0 && exp10 < 0 {
            if digits > 15 { v *= Scanner.reciprocalPowerOf10(-exp10) } else { v /= Scanner.powerOf10(-exp10) }
        }
        if digits > 15 && Self.nearFloatMidpoint(v) { return nil }
        pos = p
        return Float(negative ? -v : v)
    }

    /// A strict JSON number as a finite Float. The digits are gathered while the number is checked (one pass):
    /// with at most 15 significant digits and a power of ten up to 22 the Double is exact (Clinger's fast path:
    /// one correctly rounded operation, the result equals strtod's); with 16 to 19 digits (a float32 printed in
    /// full, as numpy's `tolist()` writes it) the 64-bit mantissa times 10^±e gives a Double within 3.5 ulps of
    /// strtod's, which rounds to the same Float unless it lies near a point halfway between two Floats
    /// (`nearFloatMidpoint`). Everything else is strtod's.
    mutating func number(sample: Int, feature: Int?) throws(DecodeError) -> Float {
        let start = pos
        var negative = false
        if peek() == UInt8(ascii: "-") { negative = true; pos += 1 }
        guard let first = peek() else { throw fail("unexpected end of input, expected a number", sample: sample) }
        var mantissa: UInt64 = 0
        var digits = 0
        var exp10 = 0
        if first == UInt8(ascii: "0") {
            pos += 1
        } else if first >= UInt8(ascii: "1") && first <= UInt8(ascii: "9") {
            while pos < end, bytes[pos] >= 48, bytes[pos] <= 57 {
                mantissa = mantissa &* 10 &+ UInt64(bytes[pos] - 48)
                digits += 1
                pos += 1
            }
        } else {
            let what: String
            let second = pos + 1 < end ? bytes[pos + 1] : 0
            if first == UInt8(ascii: "N") || first == UInt8(ascii: "I")
                || (first == UInt8(ascii: "n") && second == UInt8(ascii: "a"))
                || (first == UInt8(ascii: "i") && second == UInt8(ascii: "n"))
            {
                what = "NaN and Infinity are not valid JSON numbers (inputs must be finite)"
            } else if let feature {
                what = "sample \(sample) feature \(feature): expected a number, found \(describe(first))"
            } else {
                what = "expected a value, found \(describe(first))"
            }
            throw fail(what, sample: sample)
        }
        if peek() == UInt8(ascii: ".") {
            pos += 1
            let d = pos
            Self.fractionDigits(bytes.baseAddress!, &pos, end, &mantissa, &digits, &exp10)
            if pos == d { throw fail("digit expected after '.'", sample: sample) }
        }
        var exponentTooLarge = false
        if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            pos += 1
            var eneg = false
            if let sgn = peek(), sgn == UInt8(ascii: "+") || sgn == UInt8(ascii: "-") {
                eneg = sgn == UInt8(ascii: "-")
                pos += 1
            }
            let d = pos
            var e = 0
            while pos < end, bytes[pos] >= 48, bytes[pos] <= 57 {
                if e > 10_000 { exponentTooLarge = true } else { e = e * 10 + Int(bytes[pos] - 48) }
                pos += 1
            }
            if pos == d { throw fail("digit expected in exponent", sample: sample) }
            exp10 += eneg ? -e : e
        }
        var fast: Double? = nil
        if digits <= 19 && !exponentTooLarge {
            var v = Double(mantissa)
            if mantissa == 0 {
                fast = 0
            } else if exp10 < 0 {
                if exp10 >= -22 {
                    if digits > 15 { v *= Scanner.reciprocalPowerOf10(-exp10) } else { v /= Scanner.powerOf10(-exp10) }
                    fast = v
                }
            } else if exp10 > 0 {
                if exp10 <= 22 { v *= Scanner.powerOf10(exp10); fast = v }
            } else {
                fast = v
            }
            if let f = fast {
                if negative { fast = -f }
                if digits > 15 && Self.nearFloatMidpoint(f) { fast = nil }
            }
        }
        let length = pos - start
        var value: Double
        if let fast {
            value = fast
        } else {
            guard length < 400 else { throw fail("number too long", sample: sample) }
            value = withUnsafeTemporaryAllocation(of: CChar.self, capacity: length + 1) { tmp in
                for i in 0..<length { tmp[i] = CChar(bitPattern: bytes[start + i]) }
                tmp[length] = 0
                return strtod(tmp.baseAddress!, nil)
            }
        }
        let f = Float(value)
        if !f.isFinite {
            let where_ = feature.map { "sample \(sample) feature \($0)" } ?? "sample \(sample)"
            throw DecodeError(
                "\(line.map { "line \($0): " } ?? "")\(where_) value \(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)) is out of float32 range",
                sampleIndex: sample)
        }
        return f
    }
}
