#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes model directories (config.json + model.safetensors) from Swift: used for random benchmark models and
/// tests. Trained models come from Ops/models/export.py.
public enum ModelWriter {
    /// Writes a model with random ±1 weights, thresholds at 0 (balanced for random inputs), random scales/biases.
    public static func writeRandom(directory: String, config: ModelConfig, seed: UInt64 = 1) throws {
        try config.validate(source: "random model config")
        if config.conv != nil {
            throw ModelError(.config, "random model config: ModelWriter writes format v1 models; conv models (v2) come from Ops/models/export.py")
        }
        if config.expertHiddenLevels != nil {
            throw ModelError(.config, "random model config: ModelWriter writes format v1 models; 2-level hidden layers (v6) come from Ops/models/export.py")
        }
        var rng = SplitMix64(state: seed)
        let D = config.inputFeatures, S = config.stemWidth, E = config.experts, C = config.classes.count
        let widths = config.expertWidths
        func bits(_ rows: Int, _ k: Int) -> [UInt8] {
            let rowBytes = (k + 7) / 8
            var out = [UInt8](repeating: 0, count: rows * rowBytes)
            for r in 0..<rows {
                for j in 0..<k where rng.next() & 1 == 1 { out[r * rowBytes + j / 8] |= 1 << UInt8(j % 8) }
            }
            return out
        }
        func floats(_ n: Int, _ lo: Float, _ hi: Float) -> [UInt8] {
            var out: [UInt8] = []
            for _ in 0..<n {
                let u = Float(rng.next() >> 40) / Float(1 << 24)
                withUnsafeBytes(of: (lo + (hi - lo) * u).bitPattern.littleEndian) { out.append(contentsOf: $0) }
            }
            return out
        }
        func zerosI32(_ n: Int) -> [UInt8] { [UInt8](repeating: 0, count: 4 * n) }
        // Stem: a = Σ w·q with q ≥ 0 has mean 0 over random ±1 weights: threshold 0 is balanced.
        var tensors: [(String, String, [Int], [UInt8])] = [
            ("stem.weight", "U8", [S, (D + 7) / 8], bits(S, D)),
            ("stem.threshold", "I32", [S], zerosI32(S)),
            ("router.weight", "U8", [E, (S + 7) / 8], bits(E, S)),
            ("router.scale", "F32", [E], floats(E, 0.01, 0.2)),
            ("router.bias", "F32", [E], floats(E, -0.5, 0.5)),
        ]
        if let G = config.routerGroups {
            tensors += [
                ("router.group.weight", "U8", [G, (S + 7) / 8], bits(G, S)),
                ("router.group.scale", "F32", [G], floats(G, 0.01, 0.2)),
                ("router.group.bias", "F32", [G], floats(G, -0.5, 0.5)),
            ]
        }
        for l in 0..<config.expertHidden.count {
            tensors.append(("experts.hidden.\(l).weight", "U8", [E, widths[l + 1], (widths[l] + 7) / 8], bits(E * widths[l + 1], widths[l])))
            tensors.append(("experts.hidden.\(l).threshold", "I32", [E, widths[l + 1]], zerosI32(E * widths[l + 1])))
        }
        tensors.append(("experts.out.weight", "U8", [E, C, (widths.last! + 7) / 8], bits(E * C, widths.last!)))
        tensors.append(("experts.out.scale", "F32", [E, C], floats(E * C, 0.02, 0.1)))
        tensors.append(("experts.out.bias", "F32", [E, C], floats(E * C, -0.3, 0.3)))
        try write(directory: directory, config: config, tensors: tensors)
    }

    /// Writes `config.json` and a safetensors file holding `tensors` (name, dtype, shape, little-endian bytes).
    /// safetensors allows no holes in the data section, so tensors whose size is a multiple of 8 bytes go first
    /// (they stay 8-byte aligned, so whole-word rows load without a copy), the rest after them.
    public static func write(directory: String, config: ModelConfig, tensors: [(String, String, [Int], [UInt8])]) throws {
        mkdir(directory, 0o755)
        var header = "{\"__metadata__\":{\"format\":\"bitfleet.bmoe\"}"
        var data: [UInt8] = []
        let ordered = tensors.filter { $0.3.count % 8 == 0 } + tensors.filter { $0.3.count % 8 != 0 }
        for (name, dtype, shape, bytes) in ordered {
            let begin = data.count
            data.append(contentsOf: bytes)
            header += ",\(jsonString(name)):{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(begin),\(data.count)]}"
        }
        header += "}"
        while (8 + header.utf8.count) % 8 != 0 { header += " " }
        var file: [UInt8] = []
        let h = Array(header.utf8)
        for i in 0..<8 { file.append(UInt8(truncatingIfNeeded: UInt64(h.count) >> UInt64(8 * i))) }
        file += h
        file += data
        try writeFile(directory + "/model.safetensors", file)
        try writeFile(directory + "/config.json", Array(configJSON(config).utf8))
    }

    /// config.json text for `config` (format v1, or v3 with router groups).
    public static func configJSON(_ c: ModelConfig) -> String {
        var s = "{\n  \"format\": \"bitfleet.bmoe\",\n  \"format_version\": \(c.routerGroups == nil ? 1 : 3),\n"
        if let g = c.routerGroups { s += "  \"router_groups\": \(g),\n" }
        s += "  \"name\": \(jsonString(c.name)),\n  \"version\": \(jsonString(c.version)),\n"
        s += "  \"input_features\": \(c.inputFeatures),\n"
        if let shape = c.inputShape { s += "  \"input_shape\": [\(shape.map(String.init).joined(separator: ", "))],\n" }
        s += "  \"input_bit_planes\": \(c.inputBitPlanes),\n  \"input_scale\": \(c.inputScale),\n"
        s += "  \"stem_width\": \(c.stemWidth),\n  \"experts\": \(c.experts),\n  \"top_k\": \(c.topK),\n"
        s += "  \"expert_hidden\": [\(c.expertHidden.map(String.init).joined(separator: ", "))],\n"
        s += "  \"classes\": [\(c.classes.map(jsonString).joined(separator: ", "))]\n}\n"
        return s
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    static func writeFile(_ path: String, _ bytes: [UInt8]) throws(ModelError) {
        let tmp = path + ".tmp\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw ModelError(.io, "\(tmp): cannot create: \(String(cString: strerror(errno)))") }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                close(fd)
                throw ModelError(.io, "\(tmp): write error: \(String(cString: strerror(errno)))")
            }
            written += n
        }
        close(fd)
        if rename(tmp, path) != 0 { throw ModelError(.io, "\(path): cannot rename: \(String(cString: strerror(errno)))") }
    }
}

/// SplitMix64: a small deterministic generator, so random models, benchmarks and tests reproduce from a seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(state: UInt64) { self.state = state }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
