/// NumPy `.npy` (format versions 1.0, 2.0, 3.0), parsed strictly.
///
/// Layout: `\x93NUMPY`, major, minor, header length (uint16 LE for v1, uint32 LE for v2/v3), then a Python dict
/// literal `{'descr': '<f4', 'fortran_order': False, 'shape': (100, 784), }` padded with spaces and ending in
/// '\n', then the raw C-order data, which must be exactly `prod(shape) * itemsize` bytes.
///
/// Shapes: `(features,)` or any shape whose product is `features` is one sample (e.g. `(28, 28)`, `(1, 784)`);
/// otherwise the first dimension counts samples and the others multiply to the width (`(n, 784)`, `(n, 28, 28)`).
enum NpyDecoder {
    static let maxHeaderLength = 65_536
    static let maxDimension = 1 << 40

    enum DType {
        case uint8, float32
        var size: Int { self == .uint8 ? 1 : 4 }
    }

    struct Header {
        var dtype: DType
        var fortranOrder: Bool
        var shape: [Int]
        var dataOffset: Int
    }

    static func decode(_ body: [UInt8], features: Int, maxSamples: Int) throws(DecodeError) -> InputBatch {
        let header = try parseHeader(body)
        if header.fortranOrder {
            throw DecodeError("npy fortran_order True is not supported; save a C-order array (np.ascontiguousarray)")
        }
        let shape = header.shape
        let shapeText = "(" + shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? ",)" : ")")
        guard !shape.isEmpty else { throw DecodeError("npy shape () is a scalar; expected (features,) or (samples, features)") }
        // Every dimension bounded and every product overflow-checked before anything is computed from them:
        // a zero dimension makes the total 0 but must not hide a huge one next to it (found by libFuzzer).
        for d in shape where d > NpyDecoder.maxDimension {
            throw DecodeError("npy shape \(shapeText) is too large: dimension \(d) exceeds \(NpyDecoder.maxDimension)")
        }
        var total = 1
        for d in shape {
            let (t, o) = total.multipliedReportingOverflow(by: d)
            guard !o, t <= Int.max / 8 else {
                throw DecodeError("npy shape \(shapeText) is too large (overflows); the body has \(body.count) bytes")
            }
            total = t
        }
        let samples: Int
        let width: Int
        if total == features {
            samples = 1
            width = features
        } else {
            samples = shape[0]
            var w = 1
            for d in shape.dropFirst() {
                let (m, o) = w.multipliedReportingOverflow(by: d)
                guard !o else { throw DecodeError("npy shape \(shapeText) is too large (overflows)") }
                w = m
            }
            width = shape.count == 1 ? shape[0] : w
            if shape.count == 1 || width != features {
                let w = shape.count == 1 ? shape[0] : width
                throw DecodeError("npy shape \(shapeText): each sample has \(w) features, model expects \(features)")
            }
        }
        let dataBytes = total * header.dtype.size
        let available = body.count - header.dataOffset
        if dataBytes != available {
            if dataBytes > available {
                throw DecodeError(
                    "npy data truncated: shape \(shapeText) declares \(dataBytes) bytes of data but the body has \(available)")
            }
            throw DecodeError(
                "npy data has \(available - dataBytes) unexpected trailing bytes: shape \(shapeText) declares \(dataBytes) bytes, the body has \(available)")
        }
        guard samples > 0 else { throw DecodeError("npy shape \(shapeText) has no samples") }
        guard samples <= maxSamples else {
            throw DecodeError("input has \(samples) samples, the limit is \(maxSamples)")
        }
        switch header.dtype {
        case .uint8:
            return InputBatch(
                samples: samples, features: features, values: .uint8(Array(body[header.dataOffset...])), format: .npy)
        case .float32:
            let v = try readFloat32LE(body, offset: header.dataOffset, count: total, features: features)
            return InputBatch(samples: samples, features: features, values: .float32(v), format: .npy)
        }
    }

    static func parseHeader(_ body: [UInt8]) throws(DecodeError) -> Header {
        let magic: [UInt8] = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]   // \x93NUMPY
        guard body.count >= 10, Array(body[0..<6]) == magic else {
            throw DecodeError("not an npy file: missing the \\x93NUMPY magic")
        }
        let major = body[6], minor = body[7]
        let headerLength: Int
        let preamble: Int
        switch major {
        case 1:
            headerLength = Int(body[8]) | Int(body[9]) << 8
            preamble = 10
        case 2, 3:
            guard body.count >= 12 else { throw DecodeError("npy header truncated (\(body.count) bytes)") }
            headerLength = Int(body[8]) | Int(body[9]) << 8 | Int(body[10]) << 16 | Int(body[11]) << 24
            preamble = 12
        default:
            throw DecodeError("unsupported npy format version \(major).\(minor) (expected 1.0, 2.0 or 3.0)")
        }
        guard minor == 0 else {
            throw DecodeError("unsupported npy format version \(major).\(minor) (expected 1.0, 2.0 or 3.0)")
        }
        guard headerLength > 0, headerLength <= maxHeaderLength else {
            throw DecodeError("npy header length \(headerLength) is out of bounds (1…\(maxHeaderLength) bytes)")
        }
        guard preamble + headerLength <= body.count else {
            throw DecodeError("npy header truncated: declares \(headerLength) bytes, only \(body.count - preamble) present")
        }
        let text = Array(body[preamble..<(preamble + headerLength)])
        var parser = DictLiteralParser(bytes: text, utf8: major == 3)
        var header = try parser.parse()
        header.dataOffset = preamble + headerLength
        return header
    }
}

/// A strict parser for the header dict: exactly the keys 'descr', 'fortran_order' and 'shape', each once.
private struct DictLiteralParser {
    let bytes: [UInt8]
    let utf8: Bool
    var pos = 0

    init(bytes: [UInt8], utf8: Bool) {
        self.bytes = bytes
        self.utf8 = utf8
    }

    func fail(_ what: String) -> DecodeError {
        DecodeError("bad npy header: \(what) at header byte \(pos)")
    }

    mutating func skipSpace() {
        while pos < bytes.count, bytes[pos] == 0x20 || bytes[pos] == 0x09 { pos += 1 }
    }

    mutating func expect(_ c: UInt8) throws(DecodeError) {
        skipSpace()
        guard pos < bytes.count, bytes[pos] == c else {
            throw fail("expected '\(Character(Unicode.Scalar(c)))'")
        }
        pos += 1
    }

    mutating func string() throws(DecodeError) -> String {
        skipSpace()
        guard pos < bytes.count, bytes[pos] == 0x27 || bytes[pos] == 0x22 else { throw fail("expected a quoted string") }
        let quote = bytes[pos]
        pos += 1
        let start = pos
        while pos < bytes.count, bytes[pos] != quote {
            if bytes[pos] == 0x5c || bytes[pos] < 0x20 { throw fail("unsupported character in string") }
            pos += 1
        }
        guard pos < bytes.count else { throw fail("unterminated string") }
        let s = String(decoding: bytes[start..<pos], as: UTF8.self)
        pos += 1
        return s
    }

    mutating func word() -> String {
        skipSpace()
        let start = pos
        while pos < bytes.count, (bytes[pos] >= 0x41 && bytes[pos] <= 0x5a) || (bytes[pos] >= 0x61 && bytes[pos] <= 0x7a) {
            pos += 1
        }
        return String(decoding: bytes[start..<pos], as: UTF8.self)
    }

    mutating func integer() throws(DecodeError) -> Int {
        skipSpace()
        let start = pos
        var v = 0
        while pos < bytes.count, bytes[pos] >= 0x30 && bytes[pos] <= 0x39 {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(bytes[pos] - 0x30))
            if o1 || o2 { throw fail("shape dimension overflows") }
            v = a
            pos += 1
        }
        if pos == start { throw fail("expected a non-negative integer in shape") }
        // Python 2 era headers may write 784L.
        if pos < bytes.count && bytes[pos] == 0x4c { pos += 1 }
        return v
    }

    mutating func parseShape() throws(DecodeError) -> [Int] {
        try expect(0x28)   // (
        var dims: [Int] = []
        skipSpace()
        if pos < bytes.count && bytes[pos] == 0x29 {
            pos += 1
            return dims
        }
        while true {
            dims.append(try integer())
            if dims.count > 32 { throw fail("too many shape dimensions") }
            skipSpace()
            guard pos < bytes.count else { throw fail("unterminated shape") }
            if bytes[pos] == 0x29 {
                pos += 1
                if dims.count == 1 { throw fail("a 1-element shape tuple needs a trailing comma") }
                return dims
            }
            guard bytes[pos] == 0x2c else { throw fail("expected ',' or ')' in shape") }
            pos += 1
            skipSpace()
            if pos < bytes.count && bytes[pos] == 0x29 {
                pos += 1
                return dims
            }
        }
    }

    mutating func parse() throws(DecodeError) -> NpyDecoder.Header {
        if !utf8, bytes.contains(where: { $0 >= 0x80 }) { throw fail("non-ASCII byte in a v1/v2 header") }
        var descr: String? = nil
        var fortran: Bool? = nil
        var shape: [Int]? = nil
        try expect(0x7b)   // {
        while true {
            skipSpace()
            guard pos < bytes.count else { throw fail("unterminated dict") }
            if bytes[pos] == 0x7d { pos += 1; break }   // }
            let key = try string()
            try expect(0x3a)   // :
            switch key {
            case "descr":
                guard descr == nil else { throw fail("duplicate key 'descr'") }
                descr = try string()
            case "fortran_order":
                guard fortran == nil else { throw fail("duplicate key 'fortran_order'") }
                switch word() {
                case "True": fortran = true
                case "False": fortran = false
                default: throw fail("fortran_order must be True or False")
                }
            case "shape":
                guard shape == nil else { throw fail("duplicate key 'shape'") }
                shape = try parseShape()
            default:
                throw fail("unexpected key '\(key)'")
            }
            skipSpace()
            guard pos < bytes.count else { throw fail("unterminated dict") }
            if bytes[pos] == 0x2c { pos += 1; continue }
            if bytes[pos] == 0x7d { pos += 1; break }
            throw fail("expected ',' or '}'")
        }
        // Padding: spaces, then a final newline (numpy writes exactly that; tolerate a missing newline).
        while pos < bytes.count, bytes[pos] == 0x20 || bytes[pos] == 0x0a || bytes[pos] == 0x00 { pos += 1 }
        guard pos == bytes.count else { throw fail("unexpected data after the dict") }
        guard let descr else { throw DecodeError("bad npy header: missing key 'descr'") }
        guard let fortran else { throw DecodeError("bad npy header: missing key 'fortran_order'") }
        guard let shape else { throw DecodeError("bad npy header: missing key 'shape'") }
        let dtype: NpyDecoder.DType
        switch descr {
        case "|u1", "u1", "<u1": dtype = .uint8
        case "<f4": dtype = .float32
        case ">f4":
            throw DecodeError("npy dtype '>f4' (big-endian float32) is not supported; use '<f4' (little-endian)")
        default:
            throw DecodeError("unsupported npy dtype '\(descr)'; expected '|u1' (uint8) or '<f4' (float32)")
        }
        return NpyDecoder.Header(dtype: dtype, fortranOrder: fortran, shape: shape, dataOffset: 0)
    }
}
