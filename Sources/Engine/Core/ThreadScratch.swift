#if canImport(Glibc)
    import Glibc
#endif

/// Per-thread scratch memory that outlives a call: kernels' temporary buffers (activation blocks,
/// attention partial states) come from here, so a steady-state decode step or GEMV makes no
/// allocation. Each thread keeps `slots` buffers (a caller and the parallel units it starts on
/// the same thread use different slots); a buffer grows when a request is larger and is freed
/// when its thread ends. Memory is uninitialised, 64-byte aligned.
enum ThreadScratch {
    static let slots = 2

    /// One thread's buffers, owned through a pthread key whose destructor frees them.
    private final class Buffers {
        var pointers = [UnsafeMutableRawPointer?](repeating: nil, count: ThreadScratch.slots)
        var sizes = [Int](repeating: 0, count: ThreadScratch.slots)
        deinit { for p in pointers { free(p) } }
    }

    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        let rc = pthread_key_create(&k) { raw in
            guard let raw else { return }
            Unmanaged<AnyObject>.fromOpaque(raw).release()
        }
        precondition(rc == 0, "pthread_key_create failed (\(rc)): the process is out of thread-local keys")
        return k
    }()

    private static func buffers() -> Buffers {
        if let raw = pthread_getspecific(key) {
            return Unmanaged<Buffers>.fromOpaque(raw).takeUnretainedValue()
        }
        let b = Buffers()
        pthread_setspecific(key, Unmanaged.passRetained(b).toOpaque())
        return b
    }

    /// Runs `body` with at least `bytes` bytes of this thread's scratch `slot`.
    static func with<R>(slot: Int, bytes: Int, _ body: (UnsafeMutableRawPointer) throws -> R) rethrows -> R {
        let b = buffers()
        let need = max(64, bytes)
        if b.sizes[slot] < need {
            free(b.pointers[slot])
            var p: UnsafeMutableRawPointer? = nil
            // Out of memory here is not recoverable by the caller either.
            precondition(posix_memalign(&p, 64, need) == 0, "out of memory for \(need) bytes of kernel scratch")
            b.pointers[slot] = p
            b.sizes[slot] = need
        }
        return try body(b.pointers[slot]!)
    }
}
