/// What happens to a job after a failed attempt: a pure value, tested without a database.
public struct RetryPolicy: Sendable, Equatable {
    /// Delay before the second attempt; later attempts double it, up to `maximumDelay`.
    public var baseDelay: Double
    public var maximumDelay: Double
    /// Fraction of the delay added at random (0 … jitter), so that a burst of failures does not retry in lockstep.
    public var jitter: Double

    public init(baseDelay: Double = 2, maximumDelay: Double = 600, jitter: Double = 0.2) {
        self.baseDelay = baseDelay
        self.maximumDelay = maximumDelay
        self.jitter = jitter
    }

    public enum Decision: Sendable, Equatable {
        /// Run again after `delay` seconds (state `failed`).
        case retry(delay: Double)
        /// Never run again (state `dead`): a permanent error, or out of attempts.
        case dead
    }

    /// `attempt` is the attempt that just failed (1 for the first).
    public func decide(attempt: Int, maxAttempts: Int, retryable: Bool, random: Double = Double.random(in: 0..<1)) -> Decision {
        guard retryable, attempt < maxAttempts else { return .dead }
        let exponent = Double(max(0, min(attempt - 1, 30)))
        let delay = min(maximumDelay, baseDelay * pow2(exponent))
        return .retry(delay: delay * (1 + jitter * random))
    }

    private func pow2(_ exponent: Double) -> Double {
        var value = 1.0
        for _ in 0..<Int(exponent) { value *= 2 }
        return value
    }
}

/// Why an attempt failed, in words a user can act on, and whether trying again can help.
public struct JobFailure: Error, CustomStringConvertible, Sendable {
    public enum Class: String, Sendable {
        /// Network errors, timeouts, 5xx, a model file that could not be read: may succeed later.
        case transient
        /// Bad input, 4xx, unknown model, a refused address: the same attempt would fail again.
        case permanent
    }

    public var errorClass: Class
    public var phase: String
    public var message: String

    public init(_ errorClass: Class, phase: String, _ message: String) {
        self.errorClass = errorClass
        self.phase = phase
        self.message = message
    }

    public var retryable: Bool { errorClass == .transient }
    public var description: String { "\(phase): \(message)" }
}

extension JobFailure {
    /// The failure an error means in `phase`, classified by `ErrorClassifier` (a `JobFailure` stays as it is).
    /// A `reconnect` error reaching a job counts as retryable: the job is not at fault.
    public init(_ error: any Error, phase: JobPhase) {
        if let failure = error as? JobFailure {
            self = failure
            return
        }
        let disposition = ErrorClassifier.classify(error, phase: phase)
        self.init(disposition == .permanent ? .permanent : .transient, phase: phase.rawValue, "\(error)")
    }
}
