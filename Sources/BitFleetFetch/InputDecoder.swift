/// Turns a fetched body into an `InputBatch`, strictly: every malformed input is a `DecodeError` that names the
/// cause (and the sample), never a crash, and nothing is allocated for sizes the body cannot back.
public enum InputDecoder {
    /// Decode `body`.
    /// - format: from the job: "npy", "json", "ndjson" (or "jsonl"), "json:uint8", "ndjson:uint8" (JSON numbers
    ///   that are raw 8-bit values: integers 0…255, used as they are, not scaled), "raw:uint8:100x784", "raw:float32:784",
    ///   "raw:uint8" (width from `features`); nil → detect: npy magic, gzip magic (an error), Content-Type,
    ///   URL suffix, then the first non-blank byte ('[' JSON, '{' NDJSON).
    /// - features: the model's input width; every sample must have exactly this many values.
    /// - maxDecompressedBytes: a body that is itself gzip data (an `inputs.npy.gz` served without
    ///   Content-Encoding) is decompressed first, up to this size.
    public static func decode(
        _ body: [UInt8], format: String?, contentType: String?, url: String, features: Int,
        maxSamples: Int = 1_000_000, maxDecompressedBytes: Int = 256 << 20
    ) throws(DecodeError) -> InputBatch {
        guard features > 0 else { throw DecodeError("model input width must be positive (got \(features))") }
        guard !body.isEmpty else { throw DecodeError("input is empty (0 bytes)") }
        if Gzip.isGzip(body) && !(format?.lowercased().hasPrefix("raw") ?? false) {
            let plain: [UInt8]
            do {
                plain = try Gzip.decompress(body, limit: maxDecompressedBytes)
            } catch {
                throw DecodeError("input is gzip-compressed and cannot be decompressed: \(error.message)")
            }
            var strippedURL = Substring(url)
            if let q = strippedURL.firstIndex(where: { $0 == "?" || $0 == "#" }) { strippedURL = strippedURL[..<q] }
            if strippedURL.lowercased().hasSuffix(".gz") { strippedURL = strippedURL.dropLast(3) }
            let innerType = contentType.map { $0.lowercased().contains("gzip") ? nil : $0 } ?? nil
            return try decode(
                plain, format: format, contentType: innerType, url: String(strippedURL), features: features,
                maxSamples: maxSamples, maxDecompressedBytes: 0)
        }
        let spec: FormatSpec
        if let format, !format.isEmpty {
            spec = try FormatSpec.parse(format)
        } else {
            spec = FormatSpec(format: detectFormat(body, contentType: contentType, url: url))
        }
        switch spec.format {
        case .npy:
            return try NpyDecoder.decode(body, features: features, maxSamples: maxSamples)
        case .json:
            let batch = try JSONInputDecoder.decodeJSON(body, features: features, maxSamples: maxSamples)
            return spec.jsonUInt8 ? try Self.uint8(batch) : batch
        case .ndjson:
            let batch = try JSONInputDecoder.decodeNDJSON(body, features: features, maxSamples: maxSamples)
            return spec.jsonUInt8 ? try Self.uint8(batch) : batch
        case .raw:
            return try RawDecoder.decode(
                body, dtype: spec.rawDType ?? .uint8, shape: spec.rawShape, features: features, maxSamples: maxSamples)
        }
    }

    /// JSON numbers declared as raw 8-bit values (`json:uint8`, `ndjson:uint8`): each must be an integer 0…255 and
    /// is used as it is (no `input_scale`). Anything else is an error that names the sample and feature.
    static func uint8(_ batch: InputBatch) throws(DecodeError) -> InputBatch {
        guard case .float32(let values) = batch.values else { return batch }
        var bytes = [UInt8](repeating: 0, count: values.count)
        for (index, value) in values.enumerated() {
            guard value >= 0, value <= 255, value.rounded() == value else {
                let width = max(batch.features, 1)
                throw DecodeError(
                    "sample \(index / width) feature \(index % width): value \(value) is not an integer 0…255 "
                        + "(input_format '\(batch.format.rawValue):uint8' takes raw 8-bit values; send values scaled "
                        + "by the model's input_scale with plain '\(batch.format.rawValue)')",
                    sampleIndex: index / width)
            }
            bytes[index] = UInt8(value)
        }
        var out = batch
        out.values = .uint8(bytes)
        return out
    }

    /// The format a body is in, from its magic bytes, content type, URL suffix or first byte (JSON by default).
    public static func detectFormat(_ body: [UInt8], contentType: String?, url: String) -> InputFormat {
        if body.count >= 6 && body[0] == 0x93 && Array(body[1..<6]) == Array("NUMPY".utf8) { return .npy }
        let firstByte = body.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0a && $0 != 0x0d && $0 != 0xef && $0 != 0xbb && $0 != 0xbf })
        let looksNDJSON = firstByte == UInt8(ascii: "{")
        if let ct = contentType?.lowercased() {
            let mime = ct.split(separator: ";").first.map { String($0).trimmingSpaces() } ?? ""
            switch mime {
            case "application/x-npy", "application/npy", "application/x-numpy": return .npy
            case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines",
                "application/jsonlines", "application/json-seq":
                return .ndjson
            case "application/json", "text/json": return looksNDJSON ? .ndjson : .json
            default: break
            }
        }
        var path = Substring(url)
        if let q = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = path[..<q] }
        let lower = path.lowercased()
        if lower.hasSuffix(".npy") { return .npy }
        if lower.hasSuffix(".ndjson") || lower.hasSuffix(".jsonl") { return .ndjson }
        if lower.hasSuffix(".json") { return looksNDJSON ? .ndjson : .json }
        return looksNDJSON ? .ndjson : .json
    }
}

public enum RawDType: String, Sendable {
    case uint8, float32
    var size: Int { self == .uint8 ? 1 : 4 }
}

/// A parsed `format` string.
struct FormatSpec {
    var format: InputFormat
    var rawDType: RawDType? = nil
    var rawShape: [Int]? = nil
    /// `json:uint8` / `ndjson:uint8`: the numbers are raw 8-bit values, not scaled.
    var jsonUInt8 = false

    static func parse(_ text: String) throws(DecodeError) -> FormatSpec {
        let lower = text.lowercased().trimmingSpaces()
        switch lower {
        case "npy", "numpy": return FormatSpec(format: .npy)
        case "json", "json:float", "json:float32": return FormatSpec(format: .json)
        case "ndjson", "jsonl", "jsonlines", "ndjson:float", "ndjson:float32", "jsonl:float", "jsonl:float32":
            return FormatSpec(format: .ndjson)
        case "json:uint8", "json:u8": return FormatSpec(format: .json, jsonUInt8: true)
        case "ndjson:uint8", "ndjson:u8", "jsonl:uint8", "jsonl:u8": return FormatSpec(format: .ndjson, jsonUInt8: true)
        default: break
        }
        let parts = lower.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.first == "raw", (2...3).contains(parts.count) else {
            throw DecodeError(
                "unknown input format '\(text)' (expected npy, json, ndjson, json:uint8, ndjson:uint8, or raw:<uint8|float32>[:<samples>x<features>])")
        }
        let dtype: RawDType
        switch parts[1] {
        case "uint8", "u8", "u1": dtype = .uint8
        case "float32", "f32", "f4": dtype = .float32
        default:
            throw DecodeError("unsupported raw dtype '\(parts[1])' in format '\(text)' (expected uint8 or float32)")
        }
        var shape: [Int]? = nil
        if parts.count == 3 {
            let dims = parts[2].split(separator: "x", omittingEmptySubsequences: false)
            var out: [Int] = []
            for d in dims {
                guard let v = Int(d), v > 0, v <= 1 << 40 else {
                    throw DecodeError("invalid raw shape '\(parts[2])' in format '\(text)' (expected e.g. 100x784 or 784)")
                }
                out.append(v)
            }
            guard (1...2).contains(out.count) else {
                throw DecodeError("invalid raw shape '\(parts[2])' in format '\(text)' (expected e.g. 100x784 or 784)")
            }
            shape = out
        }
        return FormatSpec(format: .raw, rawDType: dtype, rawShape: shape)
    }
}

/// Little-endian raw arrays with a declared dtype and shape.
enum RawDecoder {
    static func decode(
        _ body: [UInt8], dtype: RawDType, shape: [Int]?, features: Int, maxSamples: Int
    ) throws(DecodeError) -> InputBatch {
        var samples: Int
        if let shape {
            let width = shape.last!
            guard width == features else {
                throw DecodeError("raw shape \(shape.map(String.init).joined(separator: "x")): each sample has \(width) features, model expects \(features)")
            }
            if shape.count == 1 {
                // Only the width: the sample count follows from the body size.
                let row = width * dtype.size
                guard body.count % row == 0 else {
                    throw DecodeError(
                        "raw \(dtype.rawValue) body of \(body.count) bytes is not a whole number of \(features)-feature samples (\(row) bytes each)")
                }
                samples = body.count / row
            } else {
                samples = shape[0]
            }
            let (n, o1) = samples.multipliedReportingOverflow(by: width)
            let (bytes, o2) = n.multipliedReportingOverflow(by: dtype.size)
            guard !o1, !o2, bytes == body.count else {
                let declared = (o1 || o2) ? "more than \(Int.max)" : "\(bytes)"
                throw DecodeError(
                    "raw \(dtype.rawValue) shape \(shape.map(String.init).joined(separator: "x")) needs \(declared) bytes but the body has \(body.count)\(!o1 && !o2 && bytes > body.count ? " (truncated)" : "")")
            }
        } else {
            let row = features * dtype.size
            guard body.count % row == 0 else {
                throw DecodeError(
                    "raw \(dtype.rawValue) body of \(body.count) bytes is not a whole number of \(features)-feature samples (\(row) bytes each)")
            }
            samples = body.count / row
        }
        guard samples > 0 else { throw DecodeError("input has no samples") }
        guard samples <= maxSamples else {
            throw DecodeError("input has \(samples) samples, the limit is \(maxSamples)")
        }
        switch dtype {
        case .uint8:
            return InputBatch(samples: samples, features: features, values: .uint8(body), format: .raw)
        case .float32:
            let values = try readFloat32LE(body, offset: 0, count: samples * features, features: features)
            return InputBatch(samples: samples, features: features, values: .float32(values), format: .raw)
        }
    }
}

/// Reads `count` little-endian float32 values at `offset`, rejecting NaN and ±inf (naming sample and feature).
func readFloat32LE(_ body: [UInt8], offset: Int, count: Int, features: Int) throws(DecodeError) -> [Float] {
    precondition(offset + count * 4 <= body.count)
    var bad = -1
    let values = [Float](unsafeUninitializedCapacity: count) { out, initialized in
        body.withUnsafeBytes { raw in
            for i in 0..<count {
                let bits = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4 * i, as: UInt32.self))
                let f = Float(bitPattern: bits)
                if !f.isFinite && bad < 0 { bad = i }
                out[i] = f
            }
        }
        initialized = count
    }
    if bad >= 0 {
        let f = values[bad]
        throw DecodeError(
            "sample \(bad / features) feature \(bad % features) is \(f.isNaN ? "NaN" : (f > 0 ? "+inf" : "-inf")); inputs must be finite",
            sampleIndex: bad / features)
    }
    return values
}
