import Dispatch
import Synchronization
#if canImport(Glibc)
    import Glibc
#endif

/// Persistent worker threads that spin briefly between jobs, so that splitting a ~50 µs GEMV
/// over two cores does not cost a libdispatch wake-up (tens of µs) each time. Workers that stay
/// idle for 200,000 polls (0.15-0.3 ms) park on a semaphore and cost nothing. The budget covers
/// the serial stretches of a decode step (attention, norms, sampling): at 20,000 polls (~15 µs)
/// the worker parked inside them and SmolLM2's 2-thread decode spent 8% of its samples in futex
/// wake-ups and 15% with the caller waiting at the join (1% and 4% at 200,000); decode ran
/// 130-150 tokens/s (medians of 8-10 runs) against 162-165. Internal: `Threads.parallelFor` uses it.
final class SpinPool: @unchecked Sendable {
    let workers: Int
    private let generation = Atomic<Int>(0)
    private let nextTask = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private final class Worker: Sendable {
        let sleeping = Atomic<Bool>(false)
        let wake = DispatchSemaphore(value: 0)
    }
    private let parked: [Worker]
    private var taskCount = 0
    private var body: ((Int) -> Void)? = nil

    static let shared = SpinPool(workers: max(0, Threads.cores - 1))
    private static let pollsBeforeParking = 200_000

    init(workers: Int) {
        self.workers = workers
        parked = (0..<workers).map { _ in Worker() }
        for w in 0..<workers {
            let t = Thread { [unowned self] in self.workerLoop(w) }
            t.stackSize = 1 << 20
            t.start()
        }
    }

    private func workerLoop(_ w: Int) {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < SpinPool.pollsBeforeParking { continue }
                parked[w].sleeping.store(true, ordering: .sequentiallyConsistent)
                if generation.load(ordering: .sequentiallyConsistent) != seen {
                    parked[w].sleeping.store(false, ordering: .relaxed)
                    break
                }
                parked[w].wake.wait()
                spins = 0
            }
            seen = generation.load(ordering: .acquiring)
            runTasks()
            remaining.subtract(1, ordering: .releasing)
        }
    }

    private func runTasks() {
        while true {
            let i = nextTask.add(1, ordering: .relaxed).oldValue
            if i >= taskCount { return }
            body!(i)
        }
    }

    /// Runs body(0..<count) on the caller and the workers; false if the pool is in use (the
    /// caller then falls back to another mechanism).
    func run(_ count: Int, _ f: @escaping (Int) -> Void) -> Bool {
        guard workers > 0, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            return false
        }
        body = f
        taskCount = count
        nextTask.store(0, ordering: .relaxed)
        remaining.store(workers, ordering: .relaxed)
        generation.add(1, ordering: .sequentiallyConsistent)
        for p in parked where p.sleeping.exchange(false, ordering: .sequentiallyConsistent) { p.wake.signal() }
        runTasks()
        while remaining.load(ordering: .acquiring) > 0 {}
        body = nil
        busy.store(false, ordering: .releasing)
        return true
    }
}

import Foundation
