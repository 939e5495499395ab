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

public struct InferenceResult: Sendable {
    /// Row-major `samples × classes`.
    public var logits: [Float]
    /// Row-major `samples × classes`: `softmax(logits)` per sample.
    public var probabilities: [Float]
    /// Per sample, the `topClasses` most probable classes, best first (ties to the lower class index).
    public var predictions: [[ClassScore]]
    public var stats: InferenceStats

    public init(logits: [Float], probabilities: [Float] = [], predictions: [[ClassScore]], stats: InferenceStats) {
        self.logits = logits
        self.probabilities = probabilities
        self.predictions = predictions
        self.stats = stats
    }
}

/// Every intermediate value of a forward pass, for comparing against the numpy reference.
public struct InferenceTrace: Sendable {
    /// `samples × stem_width` stem pre-activations `a_i` (exact integers).
    public var stemPreActivations: [Int]
    /// `samples × stem_width`, true where `h_i = +1`.
    public var stemBits: [Bool]
    /// `samples × experts`.
    public var routerScores: [Float]
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
                for i in 0..<v.count {
                    let x = v[i]
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
