/// Checked arithmetic for sizes, counts and offsets that come from files or options: an overflow
/// is an `EngineError.invalidFile` / `.invalidArgument` naming what was computed, never a trap.
enum CheckedSize {
    /// The product of `factors` (each must be >= 0).
    static func product(_ factors: Int..., what: @autoclosure () -> String) throws(EngineError) -> Int {
        var p = 1
        for f in factors {
            guard f >= 0 else { throw EngineError.invalidFile("\(what()): negative size \(f)") }
            let (r, o) = p.multipliedReportingOverflow(by: f)
            guard !o else { throw EngineError.invalidFile("\(what()): size overflows (\(factors))") }
            p = r
        }
        return p
    }

    /// The sum of `terms` (each must be >= 0).
    static func sum(_ terms: Int..., what: @autoclosure () -> String) throws(EngineError) -> Int {
        var s = 0
        for t in terms {
            guard t >= 0 else { throw EngineError.invalidFile("\(what()): negative size \(t)") }
            let (r, o) = s.addingReportingOverflow(t)
            guard !o else { throw EngineError.invalidFile("\(what()): size overflows (\(terms))") }
            s = r
        }
        return s
    }
}
