/// Decoded model input: `samples` rows of `features` values, row-major.
public struct InputBatch: Sendable {
    public enum Values: Sendable {
        /// Used as is by the engine (0…255).
        case uint8([UInt8])
        /// Scaled by the model's `input_scale` and rounded to uint8 by the engine (finite values only here).
        case float32([Float])

        public var count: Int {
            switch self {
            case .uint8(let v): return v.count
            case .float32(let v): return v.count
            }
        }
    }

    public var samples: Int
    public var features: Int
    public var values: Values
    /// Caller-chosen ids, one per sample (nil where a sample had none); nil when the format has none (npy, raw).
    public var customIDs: [String?]?
    /// The format the body was decoded as (after detection).
    public var format: InputFormat

    public init(samples: Int, features: Int, values: Values, customIDs: [String?]? = nil, format: InputFormat) {
        self.samples = samples
        self.features = features
        self.values = values
        self.customIDs = customIDs
        self.format = format
    }
}

public enum InputFormat: String, Sendable, CaseIterable {
    case npy, json, ndjson, raw
}

/// Why an input body could not be decoded. `sampleIndex` is the 0-based sample at fault, when there is one.
public struct DecodeError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public var sampleIndex: Int?

    public init(_ message: String, sampleIndex: Int? = nil) {
        self.message = message
        self.sampleIndex = sampleIndex
    }

    public var description: String { message }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\n" || f == "\r" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\n" || l == "\r" { s.removeLast() }
        return String(s)
    }
}
