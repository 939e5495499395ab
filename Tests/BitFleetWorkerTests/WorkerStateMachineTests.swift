@testable import BitFleetWorker
import BitFleetEngine
import BitFleetFetch
import BitFleetPostgres
import Testing

/// The worker's decisions, without a database, a clock or a sleep: time is a number passed in.
@Suite("Worker state machine (pure)")
struct WorkerStateMachineTests {
    static func claim(_ id: Int, attempt: Int = 1, maxAttempts: Int = 5) -> JobClaim {
        JobClaim(id: id, attempt: attempt, maxAttempts: maxAttempts, batchID: nil, customID: nil, model: "m",
                 modelVersion: nil, inputURL: "http://x/\(id)", inputFormat: nil, topK: 1, tenant: nil,
                 queueWaitSeconds: 0)
    }

    func machine(flush: Double = 0.05, grace: Double = 30, maintenance: Double = 60) -> WorkerStateMachine {
        WorkerStateMachine(settings: .init(flushSeconds: flush, gracePeriodSeconds: grace, maintenanceSeconds: maintenance))
    }

    @Test func claimedJobsRunAndTheirLeasesAreRenewedUntilFinished() {
        var m = machine()
        let claims = [Self.claim(1), Self.claim(2), Self.claim(3, attempt: 2)]
        m.claimed(claims)
        #expect(m.heartbeat(now: 0) == .renew([AttemptID(job: 1, attempt: 1), AttemptID(job: 2, attempt: 1), AttemptID(job: 3, attempt: 2)]))
        let r1 = m.beforeStarting(claims[0])
        #expect(r1 == .run)
        m.finished([claims[0].key])
        #expect(m.heartbeat(now: 1) == .renew([claims[1].key, claims[2].key]))
    }

    @Test func aLostLeaseIsSkippedAndNoLongerRenewed() {
        var m = machine()
        let claims = [Self.claim(1), Self.claim(2)]
        m.claimed(claims)
        let lost = m.leasesRenewed(requested: claims.map(\.key), held: [claims[0].key])
        #expect(lost == [claims[1].key])
        let r2 = m.beforeStarting(claims[0])
        #expect(r2 == .run)
        let r3 = m.beforeStarting(claims[1])
        #expect(r3 == .skipLeaseLost)
        #expect(m.heartbeat(now: 0) == .renew([claims[0].key]))
    }

    @Test func aJobThatFinishedDuringTheRenewalIsNotLost() {
        var m = machine()
        let claim = Self.claim(1)
        m.claimed([claim])
        let requested = [claim.key]
        m.finished([claim.key])  // its result was written between the request and the answer
        let r4 = m.leasesRenewed(requested: requested, held: [])
        #expect(r4.isEmpty)
        #expect(m.lostLeases.isEmpty)
    }

    @Test func leasesBelongToAttempts() {
        // Attempt 1 of job 7 was lost (this worker was cut off); attempt 2 of the same job now runs in this worker
        // too (rescued and claimed again by another slot). Finishing or losing one never touches the other.
        var m = machine()
        let stale = Self.claim(7, attempt: 1)
        let live = Self.claim(7, attempt: 2)
        m.claimed([stale])
        let r5 = m.leasesRenewed(requested: [stale.key], held: [])
        #expect(r5 == [stale.key])
        m.claimed([live])
        #expect(m.heartbeat(now: 0) == .renew([stale.key, live.key]))
        let r6 = m.beforeStarting(stale)
        #expect(r6 == .skipLeaseLost)
        #expect(m.heartbeat(now: 0) == .renew([live.key]))
        let r7 = m.beforeStarting(live)
        #expect(r7 == .run)
        m.finished([stale.key])  // the stale slot's bookkeeping cannot drop the live attempt
        #expect(m.inFlight[live.key] == live)
    }

    @Test func flushWhenTheBatchEndsTheOldestWaitedOrTheWorkerStops() {
        var m = machine(flush: 0.5)
        #expect(!m.shouldFlush(pending: 0, oldestPendingAt: nil, remaining: 0, now: 0))
        #expect(m.shouldFlush(pending: 1, oldestPendingAt: 10, remaining: 0, now: 10))
        #expect(!m.shouldFlush(pending: 2, oldestPendingAt: 10, remaining: 3, now: 10.4))
        #expect(m.shouldFlush(pending: 2, oldestPendingAt: 10, remaining: 3, now: 10.5))
        _ = m.stop(now: 11)
        #expect(m.shouldFlush(pending: 1, oldestPendingAt: 11, remaining: 3, now: 11))
    }

    @Test func decodedJobsRunThroughTheModelTogetherUntilTheBatchEndsFillsOrWaitsTooLong() {
        var m = WorkerStateMachine(settings: .init(flushSeconds: 0.5, maxInferenceSamples: 1000))
        #expect(!m.shouldInfer(readySamples: 0, oldestReadyAt: nil, remaining: 0, now: 0))
        #expect(m.shouldInfer(readySamples: 100, oldestReadyAt: 10, remaining: 0, now: 10))      // nothing left to fetch
        #expect(!m.shouldInfer(readySamples: 100, oldestReadyAt: 10, remaining: 3, now: 10.4))   // wait for company
        #expect(m.shouldInfer(readySamples: 100, oldestReadyAt: 10, remaining: 3, now: 10.5))    // waited long enough
        #expect(m.shouldInfer(readySamples: 1000, oldestReadyAt: 10, remaining: 3, now: 10))     // full
        _ = m.stop(now: 10)
        #expect(m.shouldInfer(readySamples: 1, oldestReadyAt: 10, remaining: 3, now: 10))        // stopping
    }

    @Test func stoppingReleasesWhatHasNotStartedAndTheDeadlineReleasesTheRest() {
        var m = machine(grace: 10)
        let claims = [Self.claim(1), Self.claim(2), Self.claim(3)]
        m.claimed(claims)
        let r8 = m.beforeStarting(claims[0])
        #expect(r8 == .run)
        let r9 = m.stop(now: 100)
        #expect(r9)
        let r10 = m.stop(now: 101)
        #expect(!r10)  // only the first request counts
        #expect(m.drainDeadline == 110)
        let r11 = m.beforeStarting(claims[1])
        #expect(r11 == .releaseRest)
        m.finished(claims[1...].map(\.key))  // released
        #expect(m.heartbeat(now: 109.9) == .renew([claims[0].key]))
        #expect(!m.drainDeadlinePassed(now: 109.9))
        #expect(m.drainDeadlinePassed(now: 110))
        #expect(m.heartbeat(now: 110) == .releaseAndExit([claims[0]]))
    }

    @Test func maintenanceRunsAtOnceThenEveryInterval() {
        var m = machine(maintenance: 60)
        let r12 = m.maintenanceDue(now: 5)
        #expect(r12)
        let r13 = m.maintenanceDue(now: 64.9)
        #expect(!r13)
        let r14 = m.maintenanceDue(now: 65)
        #expect(r14)
        let r15 = m.maintenanceDue(now: 66)
        #expect(!r15)
    }

    @Test func retryDecisionsFollowThePolicyAndTheAttempt() {
        let policy = RetryPolicy(baseDelay: 2, maximumDelay: 60, jitter: 0)
        let transient = JobFailure(.transient, phase: "fetch", "HTTP 503")
        let permanent = JobFailure(.permanent, phase: "decode", "bad npy")
        #expect(WorkerStateMachine.decision(for: transient, claim: Self.claim(1, attempt: 1), policy: policy, random: 0) == .retry(delay: 2))
        #expect(WorkerStateMachine.decision(for: transient, claim: Self.claim(1, attempt: 5, maxAttempts: 5), policy: policy) == .dead)
        #expect(WorkerStateMachine.decision(for: permanent, claim: Self.claim(1), policy: policy) == .dead)
    }

    @Test func reconnectBackoffDoublesUpToTenSeconds() {
        var backoff: Double?
        var seen: [Double] = []
        for _ in 0..<7 {
            backoff = WorkerStateMachine.reconnectBackoff(after: backoff)
            seen.append(backoff!)
        }
        #expect(seen == [0.5, 1, 2, 4, 8, 10, 10])
    }
}

@Suite("Error classification (pure)")
struct ErrorClassificationTests {
    struct Unknown: Error {}

    @Test func lostConnectionsAndTimeoutsReconnectInEveryPhase() {
        for phase in JobPhase.allCases {
            #expect(ErrorClassifier.classify(PostgresError(kind: .connection, message: "server closed the connection"), phase: phase) == .reconnect)
            for state in ["08006", "57P01", "40001", "40P01", "55P03", "57014"] {
                #expect(ErrorClassifier.classify(PostgresError(kind: .server, sqlState: state, message: "x"), phase: phase) == .reconnect)
            }
        }
    }

    @Test func aValuePostgresRefusesIsPermanentWhenWritingTheResult() {
        let refused = PostgresError(kind: .server, sqlState: "22P05", message: "unsupported Unicode escape sequence")
        #expect(ErrorClassifier.classify(refused, phase: .write) == .permanent)
        #expect(ErrorClassifier.classify(refused, phase: .model) == .retry)
    }

    @Test func jobErrorsByKind() {
        #expect(ErrorClassifier.classify(DecodeError("bad npy"), phase: .decode) == .permanent)
        #expect(ErrorClassifier.classify(ModelError(.checksum, "sha256 mismatch"), phase: .model) == .permanent)
        #expect(ErrorClassifier.classify(ModelError(.config, "bad config"), phase: .model) == .permanent)
        #expect(ErrorClassifier.classify(ModelError(.io, "cannot open"), phase: .model) == .retry)
        #expect(ErrorClassifier.classify(ModelError(.input, "wrong size"), phase: .infer) == .permanent)
        #expect(ErrorClassifier.classify(JobFailure(.transient, phase: "fetch", "503"), phase: .fetch) == .retry)
        #expect(ErrorClassifier.classify(JobFailure(.permanent, phase: "fetch", "404"), phase: .fetch) == .permanent)
            }

    @Test func unknownErrorsArePermanentOnlyAfterTheInputArrived() {
        #expect(ErrorClassifier.classify(Unknown(), phase: .fetch) == .retry)
        #expect(ErrorClassifier.classify(Unknown(), phase: .model) == .retry)
        for phase in [JobPhase.decode, .infer, .encode, .write] {
            #expect(ErrorClassifier.classify(Unknown(), phase: phase) == .permanent)
        }
    }

    @Test func aFailureNamesItsPhase() {
        let failure = JobFailure(Unknown(), phase: .encode)
        #expect(failure.phase == "encode")
        #expect(!failure.retryable)
    }
}
