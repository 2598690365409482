import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Moves the finished directory `tmp` to `path`. An existing `path` (which the caller has checked
/// may be replaced) is moved aside first, restored if the rename fails, and removed once the new
/// directory is in place, so `path` always names a complete directory.
func swapDirectoryIntoPlace(_ tmp: String, at path: String) throws {
    var old: String?
    if FileManager.default.fileExists(atPath: path) {
        old = path + ".old-\(getpid())"
        guard rename(path, old!) == 0 else {
            throw EngineError.io("cannot move the previous \(path) aside: \(String(cString: strerror(errno)))")
        }
    }
    guard rename(tmp, path) == 0 else {
        let e = String(cString: strerror(errno))
        if let old { rename(old, path) }
        throw EngineError.io("cannot rename \(tmp) to \(path): \(e)")
    }
    if let old { try? FileManager.default.removeItem(atPath: old) }
}
