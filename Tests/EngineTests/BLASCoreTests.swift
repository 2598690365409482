import CKernels
import Foundation
import XCTest

import Engine

/// OpenBLAS's kernel table: an SSE-era fallback on a CPU that has AVX2 or AVX-512 is switched
/// before the first BLAS call (ck_blas.h); the switch itself re-runs OpenBLAS's selection.
final class BLASCoreTests: XCTestCase {
    /// The decision, for the tables OpenBLAS falls back to and for ones it picks on purpose.
    func testCoreFixChoosesTheTableTheCPUCanRun() {
        func fix(_ c: String, _ isa: ck_isa) -> String? { ck_blas_core_fix(c, isa).map { String(cString: $0) } }
        XCTAssertEqual(fix("Prescott", CK_ISA_AVX512), "SkylakeX")
        XCTAssertEqual(fix("prescott", CK_ISA_AVX2), "Haswell")
        XCTAssertEqual(fix("Nehalem", CK_ISA_AVX2), "Haswell")
        XCTAssertNil(fix("Prescott", CK_ISA_SCALAR), "a CPU without AVX2 keeps the SSE kernels")
        for chosen in ["Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"] {
            XCTAssertNil(fix(chosen, CK_ISA_AVX512), chosen)
        }
    }

    /// Whatever CPU this runs on: no SSE-era table while the CPU has AVX2 (on Sapphire/Emerald
    /// Rapids with Debian 12's OpenBLAS this is the switch at work), unless the user chose one.
    func testNoSSEKernelsOnAnAVX2CPU() throws {
        let info = SystemInfo()
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil else {
            throw XCTSkip("OPENBLAS_CORETYPE is set: the user's table is kept")
        }
        if ck_isa_detected().rawValue >= CK_ISA_AVX2.rawValue {
            XCTAssertNil(ck_blas_core_fix(info.blasCore, ck_isa_detected()), "BLAS kernels \(info.blasCore)")
        }
        print("BLAS kernels: \(info.blasCore) \(info.blasCoreNote)")
    }

    /// The mechanism: selecting another table the CPU can run takes effect (the core name
    /// changes), sgemm through it matches a double-precision product, and the first table comes
    /// back; the caller's OPENBLAS_CORETYPE (unset here) is left as it was.
    func testSelectingACoreTakesEffectAndComputesCorrectly() throws {
        guard ck_isa_detected().rawValue >= CK_ISA_AVX2.rawValue else { throw XCTSkip("needs AVX2 for Haswell") }
        let first = SystemInfo().blasCore
        let env = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"]
        let target = first.lowercased() == "haswell" ? "Sandybridge" : "Haswell"
        let st = ck_blas_select_core(target)
        guard st != CK_ERR_ARGUMENT else { throw XCTSkip("OpenBLAS is not a DYNAMIC_ARCH build") }
        defer { _ = ck_blas_select_core(first) }
        XCTAssertEqual(st, CK_OK)
        XCTAssertEqual(String(cString: ck_blas_corename()).lowercased(), target.lowercased())
        XCTAssertEqual(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"], env)
        var rng = SeededRandom(seed: 3)
        let (m, n, k) = (37, 53, 29)
        let a = rng.uniform(m * k)
        let b = rng.uniform(k * n)
        var c = [Float](repeating: 0, count: m * n)
        ck_blas_sgemm(false, false, m, n, k, 1, a, k, b, n, 0, &c, n)
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var r = 0.0
                for p in 0..<k { r += Double(a[i * k + p]) * Double(b[p * n + j]) }
                worst = max(worst, abs(r - Double(c[i * n + j])))
            }
        }
        // k products of values in [-1, 1], f32 sums: k u per term at most
        XCTAssertLessThanOrEqual(worst, Double(k * k) * u32)
        XCTAssertEqual(ck_blas_select_core(first), CK_OK)
        XCTAssertEqual(String(cString: ck_blas_corename()), first)
    }

    /// Parking OpenBLAS's pool stops its threads; the next threaded call starts them again and
    /// computes the same product. The pool's threads are told apart by thread id: those a threaded
    /// call starts after a park, which the next park must end. (Counting all of the process's
    /// threads is not enough: libdispatch starts and retires its workers on its own schedule.)
    func testParkedThreadsComeBackForTheNextCall() throws {
        func tasks() throws -> Set<String> {
            Set(try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task"))
        }
        let pool = Int(ck_blas_threads())
        let n = 384
        var rng = SeededRandom(seed: 8)
        let a = rng.uniform(n * n)
        let b = rng.uniform(n * n)
        var before = [Float](repeating: 0, count: n * n)
        ck_blas_sgemm(false, false, n, n, n, 1, a, n, b, n, 0, &before, n) // the pool is up and has run
        guard parkBLASThreads() else { throw XCTSkip("this OpenBLAS has no thread pool to park") }
        let parked = try tasks()
        var after = [Float](repeating: 0, count: n * n)
        ck_blas_sgemm(false, false, n, n, n, 1, a, n, b, n, 0, &after, n)
        let started = try tasks().subtracting(parked)
        XCTAssertTrue(parkBLASThreads(), "the pool came back, so there is one to park")
        let ended = started.subtracting(try tasks())
        if pool > 1 {
            XCTAssertGreaterThanOrEqual(started.count, pool - 1, "the threaded call started \(pool - 1) threads")
            XCTAssertGreaterThanOrEqual(ended.count, pool - 1, "the park ended them: \(started) -> \(ended)")
        }
        var again = [Float](repeating: 0, count: n * n)
        ck_blas_sgemm(false, false, n, n, n, 1, a, n, b, n, 0, &again, n)
        // the same kernels and the same split over the same number of threads: the same bits
        XCTAssertEqual(after, before)
        XCTAssertEqual(again, before)
        for (i, j) in [(0, 0), (n - 1, 7), (200, n - 1)] {
            let r = (0..<n).reduce(0.0) { $0 + Double(a[i * n + $1]) * Double(b[$1 * n + j]) }
            XCTAssertEqual(Double(after[i * n + j]), r, accuracy: Double(n * n) * u32) // as above: k^2 u
        }
        XCTAssertEqual(Int(ck_blas_threads()), pool)
    }
}
