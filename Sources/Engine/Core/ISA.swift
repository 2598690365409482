import CKernels

/// A SIMD instruction-set level of the C kernels.
public enum ISA: Int, CaseIterable, Comparable, Sendable, CustomStringConvertible {
    /// Portable C; the reference every other level is tested against.
    case scalar = 0
    /// AVX2 + FMA + F16C + POPCNT.
    case avx2 = 1
    /// AVX-512 F/BW/VL/DQ + VPOPCNTDQ + VNNI.
    case avx512 = 2

    /// Levels order by capability: scalar < avx2 < avx512.
    public static func < (a: ISA, b: ISA) -> Bool { a.rawValue < b.rawValue }

    var c: ck_isa { ck_isa(rawValue: UInt32(rawValue)) }

    /// The level's name as `CK_ISA` spells it.
    public var description: String { String(cString: ck_isa_name(c)) }

    /// Parses "scalar", "avx2" or "avx512".
    public init?(name: String) {
        guard let level = ISA.allCases.first(where: { $0.description == name }) else { return nil }
        self = level
    }

    /// The highest level this CPU supports.
    public static var detected: ISA { ISA(rawValue: Int(ck_isa_detected().rawValue)) ?? .scalar }

    /// Every level this CPU can run, lowest first.
    public static var available: [ISA] { allCases.filter { $0 <= detected } }

    /// CPU features the kernels care about, as detected.
    public static var cpuFeatures: String { String(cString: ck_cpu_features()) }

    /// The level used by default: the detected one, or the one forced by `CK_ISA`.
    /// Throws if `CK_ISA` is not a known name or names a level this CPU lacks.
    public static func selected() throws(EngineError) -> ISA {
        let status = ck_isa_env_status()
        if status != CK_OK {
            let env = ProcessEnvironment.value("CK_ISA") ?? ""
            if status == CK_ERR_ARGUMENT {
                throw EngineError.unsupportedISA("CK_ISA=\(env) is not one of scalar, avx2, avx512")
            }
            throw EngineError.unsupportedISA(
                "CK_ISA=\(env) was requested but this CPU supports at most \(detected) (features: \(cpuFeatures))")
        }
        return ISA(rawValue: Int(ck_isa_selected().rawValue)) ?? .scalar
    }
}
