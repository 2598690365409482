import CKernels

/// Errors thrown by Engine. Every case carries a message that says what was wrong and what was expected.
public enum EngineError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A size, count or parameter is out of range or inconsistent with another one.
    case invalidArgument(String)
    /// A requested SIMD level cannot run on this CPU, or `CK_ISA` is malformed.
    case unsupportedISA(String)
    /// A NaN or infinity was found where finite values are required.
    case nonFinite(String)
    /// A linear-algebra routine (LAPACK) failed.
    case linearAlgebra(String)
    /// A file is truncated, corrupt or not of the expected format.
    case invalidFile(String)
    /// Valid input that this engine does not support (a tensor type, an architecture).
    case unsupported(String)
    /// An operating-system I/O call failed.
    case io(String)

    /// The error as a sentence (kind and message).
    public var description: String {
        switch self {
        case .invalidArgument(let m): return "invalid argument: \(m)"
        case .unsupportedISA(let m): return "unsupported ISA: \(m)"
        case .nonFinite(let m): return "non-finite value: \(m)"
        case .linearAlgebra(let m): return "linear algebra failure: \(m)"
        case .invalidFile(let m): return "invalid file: \(m)"
        case .unsupported(let m): return "unsupported: \(m)"
        case .io(let m): return "I/O error: \(m)"
        }
    }

    /// Maps a C status code to an error; `context` names the operation.
    static func check(_ status: ck_status, _ context: @autoclosure () -> String) throws(EngineError) {
        switch status {
        case CK_OK: return
        case CK_ERR_ARGUMENT: throw EngineError.invalidArgument(context())
        case CK_ERR_ISA: throw EngineError.unsupportedISA(context())
        case CK_ERR_NAN: throw EngineError.nonFinite(context())
        case CK_ERR_LAPACK: throw EngineError.linearAlgebra(context())
        default: throw EngineError.invalidArgument("\(context()) (status \(status.rawValue))")
        }
    }
}

extension EngineError {
    /// Throws `invalidArgument(message)` unless `condition` holds.
    @inline(__always)
    public static func require(_ condition: Bool, _ message: @autoclosure () -> String) throws(EngineError) {
        if !condition { throw EngineError.invalidArgument(message()) }
    }
}

@inline(__always)
func require(_ condition: Bool, _ message: @autoclosure () -> String) throws(EngineError) {
    if !condition { throw EngineError.invalidArgument(message()) }
}

/// Throws `nonFinite` if any value is NaN or infinite.
func requireFinite(_ values: UnsafeBufferPointer<Float>, _ what: @autoclosure () -> String) throws(EngineError) {
    for (i, v) in values.enumerated() where !v.isFinite {
        throw EngineError.nonFinite("\(what()) has \(v) at index \(i)")
    }
}

/// Throws `nonFinite` if any value of the array is NaN or infinite.
func requireFinite(_ values: [Float], _ what: @autoclosure () -> String) throws(EngineError) {
    for (i, v) in values.enumerated() where !v.isFinite {
        throw EngineError.nonFinite("\(what()) has \(v) at index \(i)")
    }
}
