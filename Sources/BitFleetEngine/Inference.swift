/// One class of a prediction.
public struct ClassScore: Sendable, Codable, Equatable {
    public var index: Int
    public var label: String
    public var probability: Float

    public init(index: Int, label: String, probability: Float) {
        self.index = index
        self.label = label
        self.probability = probability
    }
}

public struct InferenceStats: Sendable, Equatable {
    public var samples: Int
    /// Binary multiply-accumulates executed (stem bit planes × channels, router, the selected experts' layers).
    public var binaryOps: Int
    /// How many samples each expert processed (index = expert).
    public var expertActivations: [Int]

    public init(samples: Int, binaryOps: Int, expertActivations: [Int]) {
        self.samples = samples
        self.binaryOps = binaryOps
        self.expertActivations = expertActivations
    }
}

/// The most probable classes of every sample, kept flat (class indices into the probabilities the pass computed):
/// ranking a batch allocates nothing per sample. `[sample]` gives one sample's as `ClassScore`s.
public struct RankedClasses: Sendable {
    /// Row-major `samples × perSample`: class indices, best first (ties to the lower class index).
    public var indices: [Int32]
    /// Classes ranked per sample: `min(topClasses, classes)`.
    public var perSample: Int
    /// Row-major `samples × classes`: the probabilities the classes were ranked by.
    public var probabilities: [Float]
    /// The model's class labels (index = class).
    public var labels: [String]

    public init(indices: [Int32], perSample: Int, probabilities: [Float], labels: [String]) {
        self.indices = indices
        self.perSample = perSample
        self.probabilities = probabilities
        self.labels = labels
    }

    public var samples: Int { perSample > 0 ? indices.count / perSample : (labels.isEmpty ? 0 : probabilities.count / labels.count) }

    /// Class index of `sample`'s `rank`-th most probable class.
    @inline(__always) public func index(_ sample: Int, _ rank: Int) -> Int { Int(indices[sample * perSample + rank]) }

    /// Probability of `sample`'s `rank`-th most probable class.
    @inline(__always) public func probability(_ sample: Int, _ rank: Int) -> Float {
        probabilities[sample * labels.count + index(sample, rank)]
    }

    public subscript(sample: Int) -> [ClassScore] {
        (0..<perSample).map { r in
            ClassScore(index: index(sample, r), label: labels[index(sample, r)], probability: probability(sample, r))
        }
    }
}

public struct InferenceResult: Sendable {
    /// Row-major `samples × classes`.
    public var logits: [Float]
    /// Row-major `samples × classes`: `softmax(logits)` per sample.
    public var probabilities: [Float] { ranked.probabilities }
    /// The `topClasses` most probable classes of every sample.
    public var ranked: RankedClasses
    /// Per sample, the `topClasses` most probable classes, best first (ties to the lower class index).
    public var predictions: [[ClassScore]] { (0..<ranked.samples).map { ranked[$0] } }
    public var stats: InferenceStats
    /// Row-major `samples × topK`: the experts each sample was routed to, best first (empty when not recorded).
    /// Lets a caller that ran several inputs as one batch count each input's expert activations.
    public var experts: [Int32] = []
    /// Experts per sample in `experts`.
    public var topK = 0

    /// Samples routed to each of `expertCount` experts among samples `range` (from `experts`).
    public func expertActivations(samples range: Range<Int>, expertCount: Int) -> [Int] {
        var counts = [Int](repeating: 0, count: expertCount)
        guard topK > 0, range.upperBound * topK <= experts.count else { return counts }
        for e in experts[(range.lowerBound * topK)..<(range.upperBound * topK)] where Int(e) < expertCount {
            counts[Int(e)] &+= 1
        }
        return counts
    }

    public init(logits: [Float], ranked: RankedClasses, stats: InferenceStats) {
        self.logits = logits
        self.ranked = ranked
        self.stats = stats
    }
}

/// Every intermediate value of a forward pass, for comparing against the numpy reference.
public struct InferenceTrace: Sendable {
    /// `samples × stem_width` stem pre-activations `a_i` (exact integers).
    public var stemPreActivations: [Int]
    /// `samples × stem_width`, true where `h_i = +1`.
    public var stemBits: [Bool]
    /// `samples × experts` (a two-level router scores only the chosen group's experts: −∞ elsewhere).
    public var routerScores: [Float]
    /// A two-level router's group scores, `samples × groups` (empty for one flat router).
    public var routerGroupScores: [Float] = []
    /// A two-level router's chosen group per sample (empty for one flat router).
    public var routerGroups: [Int] = []
    /// `samples × top_k`, best first.
    public var experts: [Int]
    /// `samples × top_k`.
    public var gates: [Float]
    /// `samples × classes`.
    public var logits: [Float]
    /// `samples × classes`.
    public var probabilities: [Float]
    /// A conv model's pooled conv features (`samples × F`, true where +1); empty for a v1 model.
    public var convBits: [Bool] = []
}

/// Turns float features into the engine's uint8 inputs: `x_u8 = round(x · scale)` (round half to even, like
/// numpy's `np.round`), which must land in 0…255.
public enum InputQuantizer {
    public struct OutOfRange: Error, CustomStringConvertible, Sendable, Equatable {
        /// Flat index into the input array (`sample * features + feature`).
        public var index: Int
        public var value: Float
        public var reason: String
        /// Set when the caller passed `features` (row length): the sample and feature of `index`.
        public var sample: Int?
        public var feature: Int?
        public var description: String {
            if let sample, let feature {
                return "input sample \(sample) feature \(feature): value \(value): \(reason)"
            }
            return "input value \(value) at index \(index): \(reason)"
        }
    }

    public static func quantize(_ values: [Float], scale: Float) throws -> [UInt8] {
        try quantize(values, scale: scale, features: nil)
    }

    /// With `features` (the row length), errors name the sample and feature rather than only the flat index.
    public static func quantize(_ values: [Float], scale: Float, features: Int?) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: values.count)
        func failure(_ i: Int, _ x: Float, _ reason: String) -> OutOfRange {
            var e = OutOfRange(index: i, value: x, reason: reason)
            if let f = features, f > 0 {
                e.sample = i / f
                e.feature = i % f
            }
            return e
        }
        try values.withUnsafeBufferPointer { v in
            try out.withUnsafeMutableBufferPointer { o in
                // 2^23: for |r| < 2^23, (r + 2^23) − 2^23 is r rounded half to even (the default rounding mode), the
                // same as r.rounded(.toNearestOrEven) without a call per value; anything else lands outside 0…255
                // (or is NaN) and takes the exact path below, which says why.
                let magic: Float = 8_388_608
                for i in 0..<v.count {
                    let x = v[i]
                    let q = (x * scale + magic) - magic
                    if _fastPath(q >= 0 && q <= 255 && x.isFinite) {
                        o[i] = UInt8(q)
                        continue
                    }
                    if !x.isFinite {
                        throw failure(i, x, "not a finite number")
                    }
                    let r = (x * scale).rounded(.toNearestOrEven)
                    if !(r >= 0 && r <= 255) {
                        throw failure(i, x, "round(x * \(scale)) = \(r) is outside 0...255")
                    }
                    o[i] = UInt8(r)
                }
            }
        }
        return out
    }
}
