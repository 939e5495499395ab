/// Parsing and validation of a safetensors file over a memory mapping.
///
/// Layout: 8-byte little-endian header length `N`, `N` bytes of JSON header, then the data buffer. Each header entry
/// names a tensor: `{"dtype": "U8", "shape": [..], "data_offsets": [begin, end]}` with offsets relative to the data
/// buffer. Everything is checked before any tensor is touched; corrupt input throws, it never traps.
struct SafeTensorsFile {
    enum DType: String, Sendable {
        case BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64, F8_E4M3, F8_E5M2
        var size: Int {
            switch self {
            case .BOOL, .U8, .I8, .F8_E4M3, .F8_E5M2: return 1
            case .U16, .I16, .F16, .BF16: return 2
            case .U32, .I32, .F32: return 4
            case .U64, .I64, .F64: return 8
            }
        }
    }

    struct Tensor {
        var name: String
        var dtype: DType
        var shape: [Int]
        /// Absolute byte range in the file.
        var begin: Int
        var end: Int
        var byteCount: Int { end - begin }
    }

    static let maxHeaderBytes = 100 << 20

    let file: MappedFile
    let tensors: [String: Tensor]
    let metadata: [String: String]

    init(file: MappedFile) throws(ModelError) {
        self.file = file
        let path = file.path
        func fail(_ m: String) -> ModelError { ModelError(.format, "\(path): \(m)") }
        let bytes = file.bytes
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        let available = bytes.count - 8
        if n > UInt64(Self.maxHeaderBytes) {
            throw fail("bad header length \(n) (the limit is \(Self.maxHeaderBytes) bytes; is this a safetensors file?)")
        }
        if n > UInt64(available) {
            throw fail("bad header length \(n): the file has only \(available) bytes after the length (truncated?)")
        }
        if n < 2 { throw fail("bad header length \(n): too short for a JSON object") }
        let headerLength = Int(n)
        let header = UnsafeBufferPointer(start: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + 8, count: headerLength)
        let json: JSONValue
        do { json = try JSONParser.parse(header) } catch { throw fail("header is not valid JSON: \(error.description)") }
        guard case let .object(members) = json else { throw fail("header must be a JSON object, got \(json.typeName)") }

        let dataStart = 8 + headerLength
        let dataSize = bytes.count - dataStart
        var tensors: [String: Tensor] = [:]
        var metadata: [String: String] = [:]
        for (name, entry) in members {
            if name == "__metadata__" {
                guard case let .object(items) = entry else { throw fail("__metadata__ must be an object of strings") }
                for (k, v) in items {
                    guard let s = v.stringValue else { throw fail("__metadata__[\"\(k)\"] must be a string") }
                    metadata[k] = s
                }
                continue
            }
            func tfail(_ m: String) -> ModelError { ModelError(.tensor, "\(path): tensor \"\(name)\": \(m)") }
            guard case .object = entry else { throw tfail("header entry must be an object, got \(entry.typeName)") }
            guard let dtypeName = entry["dtype"]?.stringValue else { throw tfail("missing or non-string \"dtype\"") }
            guard let dtype = DType(rawValue: dtypeName) else { throw tfail("unknown dtype \"\(dtypeName)\"") }
            guard case let .array(shapeItems)? = entry["shape"] else { throw tfail("missing or non-array \"shape\"") }
            var shape: [Int] = []
            var elements = 1
            for item in shapeItems {
                guard let d = item.intValue, d >= 0 else { throw tfail("shape entries must be non-negative integers") }
                let r = elements.multipliedReportingOverflow(by: d)
                if r.overflow || r.partialValue > Int(Int32.max) * 64 { throw tfail("shape \(shape + [d]) is too large") }
                elements = r.partialValue
                shape.append(d)
            }
            guard case let .array(offsetItems)? = entry["data_offsets"], offsetItems.count == 2,
                  let begin = offsetItems[0].intValue, let end = offsetItems[1].intValue
            else { throw tfail("\"data_offsets\" must be [begin, end] integers") }
            if begin < 0 || end < begin {
                throw tfail("bad data_offsets [\(begin), \(end)]")
            }
            if end > dataSize {
                throw tfail("data_offsets [\(begin), \(end)] lie outside the file (the data section has \(dataSize) bytes; truncated?)")
            }
            let expected = elements * dtype.size
            if end - begin != expected {
                throw tfail("data_offsets [\(begin), \(end)] hold \(end - begin) bytes but \(dtype.rawValue) \(shape) needs \(expected)")
            }
            tensors[name] = Tensor(name: name, dtype: dtype, shape: shape, begin: dataStart + begin, end: dataStart + end)
        }
        // Like the reference implementation: tensors tile the data section exactly (no overlap, no holes, nothing
        // after the last tensor).
        let sorted = tensors.values.sorted { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var covered = dataStart
        var previous: String? = nil
        for t in sorted {
            if t.begin < covered {
                throw ModelError(.tensor, "\(path): tensors \"\(previous ?? "?")\" and \"\(t.name)\" overlap")
            }
            if t.begin > covered {
                throw ModelError(.tensor, "\(path): \(t.begin - covered) bytes before tensor \"\(t.name)\" belong to no tensor (holes are not allowed)")
            }
            covered = t.end
            previous = t.name
        }
        if covered != bytes.count {
            throw ModelError(.format, "\(path): \(bytes.count - covered) bytes after the last tensor belong to no tensor (file corrupt or appended to?)")
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    /// The tensor, checked to have exactly this dtype and shape.
    func tensor(_ name: String, _ dtype: DType, _ shape: [Int], why: String) throws(ModelError) -> Tensor {
        guard let t = tensors[name] else {
            throw ModelError(.tensor, "\(file.path): missing tensor \"\(name)\" (\(dtype.rawValue) \(shape), \(why))")
        }
        if t.dtype != dtype {
            throw ModelError(.tensor, "\(file.path): tensor \"\(name)\" has dtype \(t.dtype.rawValue), expected \(dtype.rawValue)")
        }
        if t.shape != shape {
            throw ModelError(.tensor, "\(file.path): tensor \"\(name)\" has shape \(t.shape), expected \(shape) (\(why))")
        }
        return t
    }

    func pointer(_ t: Tensor) -> UnsafeRawPointer { file.base + t.begin }
}
