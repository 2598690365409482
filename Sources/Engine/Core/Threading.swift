import Dispatch
import Foundation
import CKernels

struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

enum ProcessEnvironment {
    static func value(_ name: String) -> String? { ProcessInfo.processInfo.environment[name] }
}

/// Thread-count policy shared by the kernels that split work across cores.
public enum Threads {
    /// Cores available to this process.
    public static var cores: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }

    /// Default thread count: `ENGINE_THREADS` if set to an integer in 1...4 x cores, otherwise all cores.
    public static var defaultCount: Int {
        // out of range (0, negative, 3e9): ignored here, refused with a message by the CLI
        if let s = ProcessEnvironment.value("ENGINE_THREADS"), let n = Int(s), n > 0, n <= 4 * cores { return n }
        return cores
    }

    /// Runs `body(i)` for i in 0..<count on up to `threads` threads and waits for all of them.
    /// With threads == 1 (or count == 1) it runs inline, in order.
    public static func parallelFor(_ count: Int, threads: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        let t = min(max(1, threads), count)
        if t == 1 {
            for i in 0..<count { body(i) }
            return
        }
        // The callers' closures capture raw pointers into buffers they own for the duration of
        // this call, and each iteration touches a disjoint range: sharing them is sound.
        withoutActuallyEscaping(body) { body in
            let box = UncheckedSendable(body)
            // The spinning pool first (cheap hand-off); libdispatch when it is busy (nested use).
            if t == SpinPool.shared.workers + 1 && SpinPool.shared.run(count, { box.value($0) }) { return }
            DispatchQueue.concurrentPerform(iterations: count) { i in box.value(i) }
        }
    }

    /// Splits 0..<n into `parts` contiguous ranges of nearly equal size.
    public static func ranges(_ n: Int, parts: Int) -> [Range<Int>] {
        (0..<max(1, min(parts, n))).map { range(n, parts: parts, index: $0) }
    }

    /// Part `index` of `ranges(n, parts:)` without building the array (kernels call this inside
    /// `parallelFor` bodies and must not allocate); empty past the last part.
    @inline(__always)
    public static func range(_ n: Int, parts: Int, index i: Int) -> Range<Int> {
        let p = max(1, min(parts, n))
        guard i >= 0 && i < p else { return n..<n }
        return (n * i / p)..<(n * (i + 1) / p)
    }
}
