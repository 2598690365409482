import XCTest
import Engine

final class DispatchTests: XCTestCase {
    func testLevelsAndNames() throws {
        XCTAssertTrue(ISA.available.contains(.scalar))
        XCTAssertEqual(ISA.available.last, ISA.detected)
        for isa in ISA.allCases { XCTAssertEqual(ISA(name: isa.description), isa) }
        XCTAssertNil(ISA(name: "sse9"))
        for isa in ISA.allCases where isa > ISA.detected {
            assertThrowsEngineError(isUnsupportedISA) { _ = try Kernels(isa: isa) }
        }
    }

    func testCKISAOverrideAndRefusal() throws {
        // The override is read once per process, so it is checked through the CLI.
        for isa in ISA.available {
            let (status, out) = try runEngine(["info"], env: ["CK_ISA": isa.description])
            XCTAssertEqual(status, 0, out)
            XCTAssertTrue(out.contains("ISA selected:   \(isa.description)"), out)
        }
        let (status, out) = try runEngine(["selfcheck"], env: ["CK_ISA": "avx1024"])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(out.contains("not one of scalar, avx2, avx512"), out)
        if ISA.detected < .avx512 {
            let (s2, o2) = try runEngine(["selfcheck"], env: ["CK_ISA": "avx512"])
            XCTAssertNotEqual(s2, 0)
            XCTAssertTrue(o2.contains("supports at most"), o2)
        }
    }

    func testSelfCheckPasses() throws {
        guard ISA.available.count > 1 else {
            throw XCTSkip("this CPU has only the scalar level: no SIMD variant to compare with it")
        }
        let outcomes = try SelfCheck.run()
        let families = Set(outcomes.map { $0.family.split(separator: " ").first.map(String.init) ?? "" })
        XCTAssertEqual(families, ["hamming", "qmatmul", "attention", "pq", "vec", "ops"])
        XCTAssertEqual(outcomes.count, (ISA.available.count - 1) * SelfCheck.familyCount)
        for o in outcomes { XCTAssertTrue(o.passed, o.description) }
    }
}

/// The non-allocating range split the kernels use inside parallel bodies.
final class ThreadRangeTests: XCTestCase {
    func testRangeEqualsTheRangesArrayAndIsEmptyPastTheEnd() {
        for n in [0, 1, 2, 7, 64, 1000, 4097] {
            for parts in [1, 2, 3, 8, 5000] {
                let all = Threads.ranges(n, parts: parts)
                XCTAssertEqual(all.map(\.count).reduce(0, +), n)
                for (i, r) in all.enumerated() { XCTAssertEqual(Threads.range(n, parts: parts, index: i), r) }
                XCTAssertTrue(Threads.range(n, parts: parts, index: all.count).isEmpty)
                XCTAssertTrue(Threads.range(n, parts: parts, index: -1).isEmpty)
            }
        }
    }
}
