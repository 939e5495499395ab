/// The architecture of a model (`config.json`, docs/MODEL_FORMAT.md).
public struct ModelConfig: Codable, Sendable, Equatable {
    public static let format = "bitfleet.bmoe"
    public static let formatVersion = 1
    public static let maxExperts = 4096

    public var name: String
    public var version: String
    public var inputFeatures: Int
    public var inputShape: [Int]?
    public var inputBitPlanes: Int
    public var inputScale: Float
    public var stemWidth: Int
    public var experts: Int
    public var topK: Int
    public var expertHidden: [Int]
    public var classes: [String]

    enum CodingKeys: String, CodingKey {
        case name, version, classes, experts
        case inputFeatures = "input_features"
        case inputShape = "input_shape"
        case inputBitPlanes = "input_bit_planes"
        case inputScale = "input_scale"
        case stemWidth = "stem_width"
        case topK = "top_k"
        case expertHidden = "expert_hidden"
    }

    public init(name: String, version: String, inputFeatures: Int, inputShape: [Int]? = nil, inputBitPlanes: Int,
                inputScale: Float, stemWidth: Int, experts: Int, topK: Int, expertHidden: [Int], classes: [String]) {
        self.name = name
        self.version = version
        self.inputFeatures = inputFeatures
        self.inputShape = inputShape
        self.inputBitPlanes = inputBitPlanes
        self.inputScale = inputScale
        self.stemWidth = stemWidth
        self.experts = experts
        self.topK = topK
        self.expertHidden = expertHidden
        self.classes = classes
    }

    /// Widths of the binary layers an expert runs: `[S, H1, …, Hn]`.
    public var expertWidths: [Int] { [stemWidth] + expertHidden }

    /// Binary multiply-accumulates for one sample (stem bit planes, router, top-k experts).
    public var binaryMACsPerSample: Int {
        let w = expertWidths
        var expert = 0
        for l in 0..<expertHidden.count { expert += w[l] * w[l + 1] }
        expert += w.last! * classes.count
        return inputBitPlanes * inputFeatures * stemWidth + experts * stemWidth + topK * expert
    }

    /// Checks the limits of MODEL_FORMAT.md; `source` names the file in errors.
    public func validate(source: String = "config.json") throws(ModelError) {
        func fail(_ m: String) -> ModelError { ModelError(.config, "\(source): \(m)") }
        if inputFeatures < 1 { throw fail("input_features must be >= 1 (got \(inputFeatures))") }
        if !(1...8).contains(inputBitPlanes) { throw fail("input_bit_planes must be in 1...8 (got \(inputBitPlanes))") }
        if !inputScale.isFinite || inputScale <= 0 { throw fail("input_scale must be a positive finite number (got \(inputScale))") }
        if stemWidth < 1 { throw fail("stem_width must be >= 1 (got \(stemWidth))") }
        if experts < 1 || experts > Self.maxExperts { throw fail("experts must be in 1...\(Self.maxExperts) (got \(experts))") }
        if topK < 1 || topK > experts { throw fail("top_k must be in 1...experts=\(experts) (got \(topK))") }
        for (l, h) in expertHidden.enumerated() where h < 1 {
            throw fail("expert_hidden[\(l)] must be >= 1 (got \(h))")
        }
        if classes.isEmpty { throw fail("classes must be non-empty") }
        // Keep every tensor size far from Int overflow (and from absurd allocations).
        let limit = 1 << 40
        for w in [inputFeatures, stemWidth] + expertHidden where w > (1 << 24) {
            throw fail("layer width \(w) exceeds the engine's limit of \(1 << 24)")
        }
        if classes.count > (1 << 24) { throw fail("too many classes (\(classes.count))") }
        var total = inputFeatures.multipliedReportingOverflow(by: stemWidth)
        if total.overflow || total.partialValue > limit { throw fail("stem is too large") }
        let widths = expertWidths + [classes.count]
        for l in 0..<(widths.count - 1) {
            total = widths[l].multipliedReportingOverflow(by: widths[l + 1])
            if total.overflow { throw fail("expert layer \(l) is too large") }
            total = total.partialValue.multipliedReportingOverflow(by: experts)
            if total.overflow || total.partialValue > limit { throw fail("expert layer \(l) is too large") }
        }
        if let shape = inputShape {
            var p = 1
            for s in shape {
                if s < 0 { throw fail("input_shape has a negative dimension") }
                let r = p.multipliedReportingOverflow(by: s)
                if r.overflow { throw fail("input_shape product overflows") }
                p = r.partialValue
            }
            if p != inputFeatures { throw fail("input_shape \(shape) has product \(p), expected input_features=\(inputFeatures)") }
        }
    }

    /// Parses and validates `config.json` bytes. Unknown keys are ignored.
    public static func parse(_ bytes: [UInt8], source: String = "config.json") throws(ModelError) -> ModelConfig {
        func fail(_ m: String) -> ModelError { ModelError(.config, "\(source): \(m)") }
        let json: JSONValue
        do { json = try JSONParser.parse(bytes) } catch { throw fail(error.description) }
        guard case .object = json else { throw fail("expected a JSON object at the top level, got \(json.typeName)") }

        func required(_ key: String) throws(ModelError) -> JSONValue {
            guard let v = json[key] else { throw fail("missing required key \"\(key)\"") }
            return v
        }
        func int(_ key: String) throws(ModelError) -> Int {
            let v = try required(key)
            guard let i = v.intValue else { throw fail("\"\(key)\" must be an integer, got \(v.typeName)") }
            return i
        }
        func string(_ key: String) throws(ModelError) -> String {
            let v = try required(key)
            guard let s = v.stringValue else { throw fail("\"\(key)\" must be a string, got \(v.typeName)") }
            return s
        }
        func intArray(_ key: String, _ v: JSONValue) throws(ModelError) -> [Int] {
            guard case let .array(items) = v else { throw fail("\"\(key)\" must be an array of integers, got \(v.typeName)") }
            var out: [Int] = []
            for (n, item) in items.enumerated() {
                guard let i = item.intValue else { throw fail("\"\(key)\"[\(n)] must be an integer, got \(item.typeName)") }
                out.append(i)
            }
            return out
        }

        let format = try string("format")
        if format != Self.format { throw fail("\"format\" must be \"\(Self.format)\", got \"\(format)\"") }
        let fv = try required("format_version")
        guard fv.intValue == Self.formatVersion else {
            throw fail("unsupported format_version \(fv.intValue.map(String.init) ?? fv.typeName) (this engine reads version \(Self.formatVersion))")
        }
        let name = try string("name")
        let versionValue = try required("version")
        let version: String
        switch versionValue {
        case let .string(s): version = s
        case let .number(n): version = n
        default: throw fail("\"version\" must be a string, got \(versionValue.typeName)")
        }
        let scaleValue = try required("input_scale")
        guard let scale = scaleValue.doubleValue else { throw fail("\"input_scale\" must be a number, got \(scaleValue.typeName)") }
        var shape: [Int]? = nil
        if let s = json["input_shape"], s != .null { shape = try intArray("input_shape", s) }
        let classesValue = try required("classes")
        guard case let .array(classItems) = classesValue else { throw fail("\"classes\" must be an array of strings, got \(classesValue.typeName)") }
        var classes: [String] = []
        for (n, c) in classItems.enumerated() {
            guard let s = c.stringValue else { throw fail("\"classes\"[\(n)] must be a string, got \(c.typeName)") }
            classes.append(s)
        }
        let config = ModelConfig(
            name: name, version: version,
            inputFeatures: try int("input_features"), inputShape: shape,
            inputBitPlanes: try int("input_bit_planes"), inputScale: Float(scale),
            stemWidth: try int("stem_width"), experts: try int("experts"), topK: try int("top_k"),
            expertHidden: try intArray("expert_hidden", try required("expert_hidden")), classes: classes)
        try config.validate(source: source)
        return config
    }
}
