/// A format-v2 binary convolution front: `channels` filters of `kernel × kernel` binary weights over the input image
/// (4-bit or more activations, zero padding), thresholds, OR-pooling over `pool × pool` windows (docs/MODEL_FORMAT.md).
/// Format v5: `weight_bits` 2 gives the filters 2-bit weights `2·h + l ∈ {−3, −1, 1, 3}` (two sign planes).
public struct ConvConfig: Codable, Sendable, Equatable {
    public var channels: Int
    public var kernel: Int
    public var stride: Int
    public var padding: Int
    public var pool: Int
    public var weightBits: Int

    enum CodingKeys: String, CodingKey {
        case channels, kernel, stride, padding, pool
        case weightBits = "weight_bits"
    }

    public init(channels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, pool: Int = 1, weightBits: Int = 1) {
        self.channels = channels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.pool = pool
        self.weightBits = weightBits
    }

    /// Channels are limited to one 64-bit word per output position.
    public static let maxChannels = 64
    public static let maxKernel = 15
}

/// Shapes of a conv front on an `H × W` input.
public struct ConvGeometry: Sendable, Equatable {
    public let height: Int, width: Int
    public let kernel: Int, stride: Int, padding: Int, pool: Int, channels: Int
    /// 1, or 2 (format v5: weights `2·h + l`).
    public let weightBits: Int
    /// Conv output positions.
    public let outHeight: Int, outWidth: Int
    /// After pooling.
    public let pooledHeight: Int, pooledWidth: Int
    /// `pooledHeight × pooledWidth × channels` ±1 features, in (y, x, channel) order.
    public var features: Int { pooledHeight * pooledWidth * channels }
    public var positions: Int { outHeight * outWidth }
    public var taps: Int { kernel * kernel }
    /// Copies of each window in the conv's integer-layer rows: 1, or for 2-bit weights 3 (the high sign plane twice,
    /// then the low one: `2·h + l` as three ±1 weights on the same pixel), which the stem kernels run like any
    /// binary row.
    public var windowCopies: Int { weightBits == 2 ? 3 : 1 }
    /// Binary taps per row of the conv's integer layer: `windowCopies × taps`.
    public var windowTaps: Int { taps * windowCopies }

    init(_ c: ConvConfig, height: Int, width: Int) {
        self.height = height
        self.width = width
        kernel = c.kernel
        stride = c.stride
        padding = c.padding
        pool = c.pool
        channels = c.channels
        weightBits = c.weightBits
        outHeight = Self.outputs(height + 2 * c.padding, kernel: c.kernel, stride: c.stride)
        outWidth = Self.outputs(width + 2 * c.padding, kernel: c.kernel, stride: c.stride)
        pooledHeight = c.pool > 0 ? outHeight / c.pool : 0
        pooledWidth = c.pool > 0 ? outWidth / c.pool : 0
    }

    /// Window positions along an `extent` (padding included): `(extent − kernel) / stride + 1`, rounded down as
    /// `reference.py` does, so 0 when the kernel does not fit (Swift's division rounds a negative quotient up).
    static func outputs(_ extent: Int, kernel: Int, stride: Int) -> Int {
        stride > 0 && extent >= kernel ? (extent - kernel) / stride + 1 : 0
    }
}

/// A format-v4 second conv layer: `channels` binary `kernel × kernel × C1` filters over the conv front's pooled ±1
/// map (no padding), thresholds, OR-pooling over `pool × pool` windows (docs/MODEL_FORMAT.md).
public struct Conv2Config: Codable, Sendable, Equatable {
    public var channels: Int
    public var kernel: Int
    public var stride: Int
    public var pool: Int

    public init(channels: Int, kernel: Int, stride: Int = 1, pool: Int = 1) {
        self.channels = channels
        self.kernel = kernel
        self.stride = stride
        self.pool = pool
    }

    public static let maxChannels = 256
    public static let maxKernel = 7
}

/// Shapes of a second conv layer on the conv front's `height × width × inChannels` pooled map.
public struct Conv2Geometry: Sendable, Equatable {
    public let height: Int, width: Int, inChannels: Int
    public let kernel: Int, stride: Int, pool: Int, channels: Int
    public let outHeight: Int, outWidth: Int
    public let pooledHeight: Int, pooledWidth: Int
    /// Binary taps per window: `kernel² × inChannels`, in (ky, kx, c) order.
    public var taps: Int { kernel * kernel * inChannels }
    public var positions: Int { outHeight * outWidth }
    public var features: Int { pooledHeight * pooledWidth * channels }

    init(_ c: Conv2Config, front g: ConvGeometry) {
        height = g.pooledHeight
        width = g.pooledWidth
        inChannels = g.channels
        kernel = c.kernel
        stride = c.stride
        pool = c.pool
        channels = c.channels
        outHeight = ConvGeometry.outputs(height, kernel: c.kernel, stride: c.stride)
        outWidth = ConvGeometry.outputs(width, kernel: c.kernel, stride: c.stride)
        pooledHeight = c.pool > 0 ? outHeight / c.pool : 0
        pooledWidth = c.pool > 0 ? outWidth / c.pool : 0
    }
}

/// The architecture of a model (`config.json`, docs/MODEL_FORMAT.md).
public struct ModelConfig: Codable, Sendable, Equatable {
    public static let format = "bitfleet.bmoe"
    /// The newest format version this engine reads (versions 1 to 5 load unchanged).
    public static let formatVersion = 6
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
    /// Format v2: a binary convolution front before the stem (nil: the stem reads the input features).
    public var conv: ConvConfig?
    /// Format v3: a two-level router over this many groups of `experts / routerGroups` consecutive experts (the best
    /// group, then the top `top_k` of its experts); nil: one router over all experts.
    public var routerGroups: Int?
    /// Format v4: a second, binary conv layer after the conv front (nil: the stem reads the front's features).
    public var conv2: Conv2Config?
    /// Format v6: thresholds per unit of each expert hidden layer, 1 or 2 (nil: 1 each). A layer with 2 gives the
    /// next layer 2 H bits: its units against the first thresholds, then against the second.
    public var expertHiddenLevels: [Int]?

    enum CodingKeys: String, CodingKey {
        case name, version, classes, experts
        case inputFeatures = "input_features"
        case inputShape = "input_shape"
        case inputBitPlanes = "input_bit_planes"
        case inputScale = "input_scale"
        case stemWidth = "stem_width"
        case topK = "top_k"
        case expertHidden = "expert_hidden"
        case conv
        case routerGroups = "router_groups"
        case conv2
        case expertHiddenLevels = "expert_hidden_levels"
    }

    public init(name: String, version: String, inputFeatures: Int, inputShape: [Int]? = nil, inputBitPlanes: Int,
                inputScale: Float, stemWidth: Int, experts: Int, topK: Int, expertHidden: [Int], classes: [String],
                conv: ConvConfig? = nil, routerGroups: Int? = nil, conv2: Conv2Config? = nil,
                expertHiddenLevels: [Int]? = nil) {
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
        self.conv = conv
        self.routerGroups = routerGroups
        self.conv2 = conv2
        self.expertHiddenLevels = expertHiddenLevels
    }

    /// Experts the router scores per sample: every expert, or with groups the group scores and one group's experts.
    public var routerRowsPerSample: Int {
        guard let g = routerGroups, g > 0 else { return experts }
        return g + experts / g
    }

    /// Groups for a two-level router over `experts`: the divisor G ≥ 2 that makes G + experts / G (router rows per
    /// sample) smallest, or nil when no grouping scores fewer rows than one flat router (a prime count, 4 or fewer).
    public static func suggestedRouterGroups(experts: Int) -> Int? {
        var best: Int? = nil
        var rows = experts
        for g in stride(from: 2, to: experts, by: 1) where experts % g == 0 && g + experts / g < rows {
            best = g
            rows = g + experts / g
        }
        return best
    }

    /// The conv front's shapes (nil without one, or without a two-dimensional `input_shape`).
    public var convGeometry: ConvGeometry? {
        guard let c = conv, let shape = inputShape, shape.count == 2 else { return nil }
        return ConvGeometry(c, height: shape[0], width: shape[1])
    }

    /// The second conv layer's shapes (nil without one or without a conv front).
    public var conv2Geometry: Conv2Geometry? {
        guard let c = conv2, let g = convGeometry else { return nil }
        return Conv2Geometry(c, front: g)
    }

    /// What the stem reads: the second conv's pooled ±1 features, else the conv front's, else the input features.
    public var stemInputWidth: Int { conv2Geometry?.features ?? convGeometry?.features ?? inputFeatures }

    /// Width of `h`, what the router and the experts read: the stem's width, or, for a conv model without a stem
    /// (`stem_width` 0), the conv features.
    public var representationWidth: Int { stemWidth > 0 ? stemWidth : stemInputWidth }

    /// Widths of the binary layers an expert runs: `[S, H1, …, Hn]` (units; see `expertInputWidths` for the bits
    /// each layer reads).
    public var expertWidths: [Int] { [representationWidth] + expertHidden }

    /// Threshold levels of expert hidden layer `l` (1, or 2 in format v6).
    public func hiddenLevels(_ l: Int) -> Int { expertHiddenLevels?[l] ?? 1 }

    /// Bits each expert layer reads: `[S, L1·H1, …, Ln·Hn]`; the last is what the output layer reads.
    public var expertInputWidths: [Int] {
        [representationWidth] + expertHidden.indices.map { hiddenLevels($0) * expertHidden[$0] }
    }

    /// UInt64 words of each expert activation as the engine holds it: `ceil(S / 64)`, then per hidden layer
    /// `L · ceil(H / 64)` (each level's bits start on a word).
    public var expertActivationWords: [Int] {
        [(representationWidth + 63) / 64] + expertHidden.indices.map { hiddenLevels($0) * ((expertHidden[$0] + 63) / 64) }
    }

    /// Binary multiply-accumulates for one sample (conv and stem bit planes, router, top-k experts).
    public var binaryMACsPerSample: Int {
        let w = expertWidths, reads = expertInputWidths
        var expert = 0
        for l in 0..<expertHidden.count { expert += reads[l] * w[l + 1] }
        expert += reads.last! * classes.count
        let S = representationWidth
        if let g = convGeometry {
            let second = conv2Geometry.map { $0.taps * $0.channels * $0.positions } ?? 0
            return inputBitPlanes * g.taps * g.weightBits * g.channels * g.positions + second + stemInputWidth * stemWidth
                + routerRowsPerSample * S + topK * expert
        }
        return inputBitPlanes * inputFeatures * stemWidth + routerRowsPerSample * S + topK * expert
    }

    /// Checks the limits of MODEL_FORMAT.md; `source` names the file in errors.
    public func validate(source: String = "config.json") throws(ModelError) {
        func fail(_ m: String) -> ModelError { ModelError(.config, "\(source): \(m)") }
        if inputFeatures < 1 { throw fail("input_features must be >= 1 (got \(inputFeatures))") }
        if !(1...8).contains(inputBitPlanes) { throw fail("input_bit_planes must be in 1...8 (got \(inputBitPlanes))") }
        if !inputScale.isFinite || inputScale <= 0 { throw fail("input_scale must be a positive finite number (got \(inputScale))") }
        if let c = conv {
            guard let shape = inputShape, shape.count == 2 else {
                throw fail("a conv front needs a two-dimensional input_shape [height, width]")
            }
            if !(1...ConvConfig.maxChannels).contains(c.channels) {
                throw fail("conv.channels must be in 1...\(ConvConfig.maxChannels) (got \(c.channels))")
            }
            if !(1...ConvConfig.maxKernel).contains(c.kernel) {
                throw fail("conv.kernel must be in 1...\(ConvConfig.maxKernel) (got \(c.kernel))")
            }
            if c.stride < 1 || c.stride > c.kernel { throw fail("conv.stride must be in 1...kernel (got \(c.stride))") }
            if c.padding < 0 || c.padding >= c.kernel { throw fail("conv.padding must be in 0..<kernel (got \(c.padding))") }
            if c.pool < 1 { throw fail("conv.pool must be >= 1 (got \(c.pool))") }
            if c.weightBits != 1 && c.weightBits != 2 { throw fail("conv.weight_bits must be 1 or 2 (got \(c.weightBits))") }
            if shape.contains(where: { $0 < 1 || $0 > 4096 }) { throw fail("input_shape dimensions must be in 1...4096") }
            let g = ConvGeometry(c, height: shape[0], width: shape[1])
            if g.outHeight < 1 || g.outWidth < 1 || g.pooledHeight < 1 || g.pooledWidth < 1 {
                throw fail("conv front \(c.kernel)×\(c.kernel)/\(c.stride), padding \(c.padding), pool \(c.pool) leaves no output on a \(shape[0])×\(shape[1]) input")
            }
            if stemWidth < 0 { throw fail("stem_width must be >= 0 with a conv front (got \(stemWidth))") }
            if let c2 = conv2 {
                if !(1...Conv2Config.maxChannels).contains(c2.channels) {
                    throw fail("conv2.channels must be in 1...\(Conv2Config.maxChannels) (got \(c2.channels))")
                }
                if !(1...Conv2Config.maxKernel).contains(c2.kernel) {
                    throw fail("conv2.kernel must be in 1...\(Conv2Config.maxKernel) (got \(c2.kernel))")
                }
                if c2.stride < 1 || c2.stride > c2.kernel { throw fail("conv2.stride must be in 1...kernel (got \(c2.stride))") }
                if c2.pool < 1 { throw fail("conv2.pool must be >= 1 (got \(c2.pool))") }
                let g2 = Conv2Geometry(c2, front: g)
                if g2.pooledHeight < 1 || g2.pooledWidth < 1 {
                    throw fail("conv2 \(c2.kernel)×\(c2.kernel)/\(c2.stride), pool \(c2.pool) leaves no output on the conv front's \(g.pooledHeight)×\(g.pooledWidth) map")
                }
            }
        } else if conv2 != nil {
            throw fail("a conv2 block needs a conv block")
        } else if stemWidth < 1 {
            throw fail("stem_width must be >= 1 (got \(stemWidth))")
        }
        if experts < 1 || experts > Self.maxExperts { throw fail("experts must be in 1...\(Self.maxExperts) (got \(experts))") }
        if topK < 1 || topK > experts { throw fail("top_k must be in 1...experts=\(experts) (got \(topK))") }
        if let g = routerGroups {
            if g < 2 || g > experts || experts % g != 0 {
                throw fail("router_groups must be at least 2 and divide experts=\(experts) (got \(g))")
            }
            if topK > experts / g {
                throw fail("top_k=\(topK) exceeds the \(experts / g) experts of one router group (experts / router_groups)")
            }
        }
        for (l, h) in expertHidden.enumerated() where h < 1 {
            throw fail("expert_hidden[\(l)] must be >= 1 (got \(h))")
        }
        if let levels = expertHiddenLevels, levels.count != expertHidden.count || levels.contains(where: { $0 != 1 && $0 != 2 }) {
            throw fail("expert_hidden_levels must list 1 or 2 for each of the \(expertHidden.count) expert hidden layers (got \(levels))")
        }
        if classes.isEmpty { throw fail("classes must be non-empty") }
        // Keep every tensor size far from Int overflow (and from absurd allocations).
        let limit = 1 << 40
        for w in [inputFeatures, stemWidth] + expertHidden where w > (1 << 24) {
            throw fail("layer width \(w) exceeds the engine's limit of \(1 << 24)")
        }
        if classes.count > (1 << 24) { throw fail("too many classes (\(classes.count))") }
        if stemInputWidth > (1 << 24) { throw fail("conv features \(stemInputWidth) exceed the engine's limit of \(1 << 24)") }
        var total = stemInputWidth.multipliedReportingOverflow(by: stemWidth)
        if total.overflow || total.partialValue > limit { throw fail("stem is too large") }
        let widths = expertWidths + [classes.count], reads = expertInputWidths
        for l in 0..<(widths.count - 1) {
            total = reads[l].multipliedReportingOverflow(by: widths[l + 1])
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
        guard let formatVersion = fv.intValue, (1...Self.formatVersion).contains(formatVersion) else {
            throw fail("unsupported format_version \(fv.intValue.map(String.init) ?? fv.typeName) (this engine reads versions 1 to \(Self.formatVersion))")
        }
        var routerGroups: Int? = nil
        if let g = json["router_groups"], g != .null {
            guard formatVersion >= 3 else { throw fail("\"router_groups\" needs format_version 3") }
            guard let i = g.intValue else { throw fail("\"router_groups\" must be an integer, got \(g.typeName)") }
            routerGroups = i
        }
        /// The integer `key` of the `block` object (a conv block): `d` when absent, if given.
        func blockInt(_ block: JSONValue, _ name: String, _ key: String, default d: Int? = nil) throws(ModelError) -> Int {
            guard let v = block[key] else {
                if let d { return d }
                throw fail("\(name): missing required key \"\(key)\"")
            }
            guard let i = v.intValue else { throw fail("\"\(name).\(key)\" must be an integer, got \(v.typeName)") }
            return i
        }
        var conv2: Conv2Config? = nil
        if let c = json["conv2"], c != .null {
            guard formatVersion >= 4 else { throw fail("\"conv2\" needs format_version 4") }
            guard case .object = c else { throw fail("\"conv2\" must be an object, got \(c.typeName)") }
            conv2 = Conv2Config(channels: try blockInt(c, "conv2", "channels"), kernel: try blockInt(c, "conv2", "kernel"),
                                stride: try blockInt(c, "conv2", "stride", default: 1),
                                pool: try blockInt(c, "conv2", "pool", default: 1))
        }
        var conv: ConvConfig? = nil
        if let c = json["conv"], c != .null {
            guard formatVersion >= 2 else { throw fail("\"conv\" needs format_version 2") }
            guard case .object = c else { throw fail("\"conv\" must be an object, got \(c.typeName)") }
            conv = ConvConfig(channels: try blockInt(c, "conv", "channels"), kernel: try blockInt(c, "conv", "kernel"),
                              stride: try blockInt(c, "conv", "stride", default: 1),
                              padding: try blockInt(c, "conv", "padding", default: 0),
                              pool: try blockInt(c, "conv", "pool", default: 1),
                              weightBits: try blockInt(c, "conv", "weight_bits", default: 1))
            if conv!.weightBits != 1 && formatVersion < 5 { throw fail("\"conv\": \"weight_bits\" needs format_version 5") }
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
        var levels: [Int]? = nil
        if let v = json["expert_hidden_levels"], v != .null {
            guard formatVersion >= 6 else { throw fail("\"expert_hidden_levels\" needs format_version 6") }
            levels = try intArray("expert_hidden_levels", v)
        }
        let config = ModelConfig(
            name: name, version: version,
            inputFeatures: try int("input_features"), inputShape: shape,
            inputBitPlanes: try int("input_bit_planes"), inputScale: Float(scale),
            stemWidth: try int("stem_width"), experts: try int("experts"), topK: try int("top_k"),
            expertHidden: try intArray("expert_hidden", try required("expert_hidden")), classes: classes, conv: conv,
            routerGroups: routerGroups, conv2: conv2, expertHiddenLevels: levels)
        try config.validate(source: source)
        return config
    }
}
