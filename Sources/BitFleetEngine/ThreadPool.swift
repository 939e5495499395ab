import CEngineSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A persistent pool of worker threads for data-parallel loops (`parallelFor`). Threads are created once and
/// reused; the calling thread always takes part, so a call makes progress even when all helpers are busy with
/// another caller's work. Safe to use from many threads at once.
public final class ThreadPool: @unchecked Sendable {
    /// One pool per process, with a helper for every online CPU but one (the caller is the last worker).
    public static let shared = ThreadPool(helpers: max(0, ThreadPool.onlineCPUs - 1))

    /// CPUs this process may run on (affinity mask / cgroup cpuset), at least 1.
    public static var onlineCPUs: Int { max(1, Int(bf_usable_cpus())) }

    private final class Job {
        let body: (Int) -> Void
        let count: Int
        var next = 0
        /// Indices done; changed under the pool's mutex, read without it by a caller spinning for the end.
        let finished = Atomic<Int>(0)
        init(count: Int, body: @escaping (Int) -> Void) {
            self.count = count
            self.body = body
        }
    }

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let workAvailable = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let jobDone = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var pending: [Job] = []   // jobs with unclaimed indices, oldest first
    public let helpers: Int
    /// Bumped whenever a job is queued: a helper that just finished work watches it for a moment before it sleeps.
    private let generation = Atomic<Int>(0)
    /// How long an idle helper spins before sleeping on the condition variable. Waking a sleeping thread costs
    /// tens to hundreds of microseconds (more in a VM, where the idle vCPU is halted), as long as a whole
    /// micro-batch of inference: without the spin, back-to-back `predict` calls ran on one core.
    static let spinSeconds = 0.0005

    /// Total workers a call can use: the helpers plus the calling thread.
    public var width: Int { helpers + 1 }

    public init(helpers: Int) {
        self.helpers = helpers
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(workAvailable, nil)
        pthread_cond_init(jobDone, nil)
        for _ in 0..<helpers {
            let box = Unmanaged.passRetained(self)
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { arg in
                let pool = Unmanaged<ThreadPool>.fromOpaque(arg!).takeRetainedValue()
                pool.helperLoop()
                return nil
            }, box.toOpaque())
            if rc != 0 {
                box.release()
            } else {
                pthread_detach(thread)
            }
        }
    }

    // Helpers hold a reference and run forever: pools are meant to be long-lived (see `shared`).

    /// Spins while `waiting()` holds, for at most `spinSeconds` (the caller then sleeps on a condition variable).
    @inline(__always)
    private static func spin(while waiting: () -> Bool) {
        let deadline = bf_monotonic_seconds() + spinSeconds
        var spins = 0
        while waiting() {
            bf_cpu_relax()   // without it the spin took execution slots from the thread doing the work
            spins &+= 1
            if spins & 15 == 0 && bf_monotonic_seconds() > deadline { break }
        }
    }

    private func helperLoop() {
        pthread_mutex_lock(mutex)
        while true {
            if pending.isEmpty {
                // spin briefly (outside the lock) for the next job before sleeping
                let seen = generation.load(ordering: .acquiring)
                pthread_mutex_unlock(mutex)
                Self.spin { generation.load(ordering: .acquiring) == seen }
                pthread_mutex_lock(mutex)
            }
            while pending.isEmpty { pthread_cond_wait(workAvailable, mutex) }
            let job = pending[0]
            let index = job.next
            job.next += 1
            if job.next == job.count { pending.removeFirst() }
            pthread_mutex_unlock(mutex)
            job.body(index)
            pthread_mutex_lock(mutex)
            if job.finished.add(1, ordering: .releasing).newValue == job.count { pthread_cond_broadcast(jobDone) }
        }
    }

    /// Runs `body(0) … body(count − 1)`, spread over the caller and the helpers; returns when all are done.
    /// At most `maxConcurrency` indices run at the same time only in the sense that the work is split into `count`
    /// pieces: pass as many pieces as threads you want busy.
    public func parallelFor(_ count: Int, _ body: @escaping (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || helpers == 0 {
            for i in 0..<count { body(i) }
            return
        }
        let job = Job(count: count, body: body)
        pthread_mutex_lock(mutex)
        pending.append(job)
        generation.add(1, ordering: .releasing)
        pthread_cond_broadcast(workAvailable)
        // The caller works on its own job until every index is claimed.
        while job.next < job.count {
            let index = job.next
            job.next += 1
            if job.next == job.count, let at = pending.firstIndex(where: { $0 === job }) { pending.remove(at: at) }
            pthread_mutex_unlock(mutex)
            body(index)
            pthread_mutex_lock(mutex)
            job.finished.add(1, ordering: .releasing)
        }
        // The helpers' last indices are usually a few microseconds from done: spin for them a moment (as an idle
        // helper spins for work) before sleeping; a sleeping caller is woken only after its vCPU was halted, which
        // costs as much as the wait itself.
        if job.finished.load(ordering: .acquiring) < job.count {
            pthread_mutex_unlock(mutex)
            Self.spin { job.finished.load(ordering: .acquiring) < job.count }
            pthread_mutex_lock(mutex)
        }
        while job.finished.load(ordering: .acquiring) < job.count { pthread_cond_wait(jobDone, mutex) }
        pthread_mutex_unlock(mutex)
    }
}
