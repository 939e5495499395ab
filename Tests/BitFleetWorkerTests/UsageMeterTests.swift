@testable import BitFleetWorker
import Testing

@Suite("Usage meter (pure)")
struct UsageMeterTests {
    @Test func busyIsProcessCPUAndIdleTheRestOfTheAllocatedCores() {
        var meter = UsageMeter(cores: 2, wall: 100, cpu: 10)
        #expect(meter.next(wall: 110, cpu: 15) == .init(start: 100, end: 110, cores: 2, busy: 5, idle: 15))
        // The next period starts where the last ended; busy never exceeds capacity, idle is never negative.
        #expect(meter.next(wall: 111, cpu: 20) == .init(start: 110, end: 111, cores: 2, busy: 2, idle: 0))
        #expect(meter.next(wall: 111, cpu: 20) == .init(start: 111, end: 111, cores: 2, busy: 0, idle: 0))
    }
}
