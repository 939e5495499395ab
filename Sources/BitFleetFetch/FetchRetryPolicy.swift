#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// When to try a failed fetch again, as a pure value (no clock, no I/O): exponential backoff with full jitter,
/// capped, honouring a server's Retry-After up to `maxDelay`. Only `FetchError.isRetryable` errors are retried.
public struct FetchRetryPolicy: Sendable, Equatable {
    /// Total attempts including the first (1 = no retry).
    public var maxAttempts: Int = 3
    /// Backoff before retry n (1-based) is drawn from 0…min(maxDelay, baseDelay · 2^(n−1)) seconds.
    public var baseDelay: Double = 0.5
    public var maxDelay: Double = 10

    public init(maxAttempts: Int = 3, baseDelay: Double = 0.5, maxDelay: Double = 10) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    /// Seconds to wait before the next attempt after `attempt` (1-based) failed with `error`, or nil to give up.
    /// `unit` is a random number in 0..<1 (pass `Double.random(in: 0..<1)`; tests pass fixed values).
    public func delay(afterAttempt attempt: Int, error: FetchError, unit: Double) -> Double? {
        guard error.isRetryable, attempt >= 1, attempt < maxAttempts else { return nil }
        if let ra = error.retryAfterSeconds, ra > 0 {
            return ra <= maxDelay ? ra : nil   // a server asking for longer than we wait: give up now
        }
        let exp = min(Double(attempt - 1), 30)
        let cap = min(maxDelay, baseDelay * pow(2, exp))
        return max(0, min(1, unit)) * cap
    }
}

extension HTTPClient {
    /// `get` with retries per `retry`; blocks the calling thread while backing off. The last error is thrown,
    /// its message prefixed with the attempt count when more than one attempt was made.
    public func get(
        _ url: String, headers: [String] = [], retry: FetchRetryPolicy,
        sleep: (Double) -> Void = { s in if s > 0 { usleep(UInt32(min(s, 3600) * 1_000_000)) } }
    ) throws(FetchError) -> FetchResponse {
        var attempt = 1
        while true {
            do {
                return try get(url, headers: headers)
            } catch {
                guard let wait = retry.delay(afterAttempt: attempt, error: error, unit: Double.random(in: 0..<1)) else {
                    if attempt > 1 {
                        var e = error
                        e.message = "\(error.message) (after \(attempt) attempts)"
                        throw e
                    }
                    throw error
                }
                sleep(wait)
                attempt += 1
            }
        }
    }
}
