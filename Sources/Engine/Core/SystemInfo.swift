import CKernels
import Foundation

/// What the engine detected and selected: ISA levels, BLAS library and threads.
public struct SystemInfo: Sendable, CustomStringConvertible {
    /// The highest level this CPU supports.
    public let detected: ISA
    /// Selected level, or the error that `CK_ISA` caused.
    public let selected: Result<ISA, EngineError>
    /// CPU features detected (names as in /proc/cpuinfo).
    public let cpuFeatures: String
    /// OpenBLAS build description (its core type shows which kernels it picked).
    public let blasConfig: String
    /// OpenBLAS kernel table in use ("Haswell", "SkylakeX", "Zen", ...).
    public let blasCore: String
    /// Empty, or what the engine did about an SSE-era table OpenBLAS chose for a CPU it does not
    /// know (`ck_blas.h`): switched it, or could not.
    public let blasCoreNote: String
    /// OpenBLAS threads.
    public let blasThreads: Int
    /// Threads Engine's kernels use by default.
    public let engineThreads: Int
    /// Cores available to this process.
    public let cores: Int

    /// Reads the current state.
    public init() {
        detected = ISA.detected
        selected = Result { try ISA.selected() }.mapError { $0 as? EngineError ?? .unsupportedISA("\($0)") }
        cpuFeatures = ISA.cpuFeatures
        blasCoreNote = String(cString: ck_blas_core_note())
        blasConfig = String(cString: ck_blas_config())
        blasCore = String(cString: ck_blas_corename())
        blasThreads = Int(ck_blas_threads())
        engineThreads = Threads.defaultCount
        cores = Threads.cores
    }

    /// The report `engine info` prints.
    public var description: String {
        let sel: String
        switch selected {
        case .success(let s): sel = s.description
        case .failure(let e): sel = "error: \(e)"
        }
        return """
            ISA detected:   \(detected)   (available: \(ISA.available.map(\.description).joined(separator: ", ")))
            ISA selected:   \(sel)
            CPU features:   \(cpuFeatures)
            BLAS:           \(blasConfig)
            BLAS kernels:   \(blasCore)\(blasCoreNote.isEmpty ? "" : " (\(blasCoreNote))")
            BLAS threads:   \(blasThreads)
            Engine threads: \(engineThreads) of \(cores) cores (ENGINE_THREADS overrides)
            """
    }
}

/// Stops OpenBLAS's worker threads, which spin for ~0.1 s of CPU each after a threaded call;
/// OpenBLAS starts them again at its next threaded call. (The library is loaded on the first
/// BLAS call with its pool already parked.) Returns whether there was a pool to stop: false
/// while OpenBLAS is not loaded.
@discardableResult
public func parkBLASThreads() -> Bool { ck_blas_park_threads() == 1 }

/// Applies the thread policy: OpenBLAS gets the same pool size as Engine, and Engine calls BLAS
/// from inside its own parallel regions only with OpenBLAS on one thread
/// (`BLASSingleThreadScope`), so cores are not oversubscribed.
public func configureThreads(_ n: Int = Threads.defaultCount) {
    BLASSingleThreadScope.configure(Int32(min(max(1, n), 4 * Threads.cores)))
}

/// Lets one caller run OpenBLAS on a single thread per call while it splits work over Engine's
/// own threads (BERT batches: one group of sentences per thread). OpenBLAS's pool size is
/// process-wide; while a scope is held it is 1, and it is restored on `leave()`. A BLAS call made
/// elsewhere meanwhile gives the same result, on one thread (level-3 products split rows and
/// columns across threads, never the summed dimension). At most one scope at a time: `enter()`
/// returns nil while another is held (the caller then runs its serial path). `configureThreads`
/// during a scope takes effect when it ends.
final class BLASSingleThreadScope: @unchecked Sendable {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var held = false // guarded by lock
    nonisolated(unsafe) private static var restore: Int32 = 1 // guarded by lock: the count after the scope

    private init() {}

    static func enter() -> BLASSingleThreadScope? {
        lock.lock()
        defer { lock.unlock() }
        guard !held else { return nil }
        held = true
        restore = ck_blas_threads()
        ck_blas_set_threads(1)
        return BLASSingleThreadScope()
    }

    func leave() {
        Self.lock.lock()
        defer { Self.lock.unlock() }
        ck_blas_set_threads(Self.restore)
        Self.held = false
    }

    /// OpenBLAS's pool size from now on, or from the end of the scope that is held.
    static func configure(_ n: Int32) {
        lock.lock()
        defer { lock.unlock() }
        if held { restore = n } else { ck_blas_set_threads(n) }
    }
}
