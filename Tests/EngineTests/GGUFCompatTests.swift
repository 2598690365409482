import XCTest
import Engine

/// Block layouts against gguf-py (the ggml project's Python reference), via a fixture made by
/// scripts/gen_quant_fixture.py.
final class GGUFCompatTests: XCTestCase {
    func testBlocksMatchGGUFPy() throws {
        var r = ByteReader(Array(try Data(contentsOf: fixtureURL("quant_gguf.bin"))))
        let rows = r.u32()
        let cols = r.u32()
        let x = r.floats(rows * cols)
        let types: [Int: RowType] = [8: .q8_0, 2: .q4_0, 3: .q4_1] // ggml type ids
        for _ in 0..<3 {
            let id = r.u32()
            let nbytes = r.u32()
            let t = try XCTUnwrap(types[id])
            let theirs = r.bytes(nbytes)
            let theirDeq = r.floats(rows * cols)
            // Reading their bytes: our dequantization must give exactly their floats.
            let m = try QuantizedMatrix(type: t, rows: rows, cols: cols, bytes: theirs)
            XCTAssertEqual(m.dequantized(kernels: try kernels(.scalar)), theirDeq, "\(t) dequantize")
            // Writing: our quantizer follows the same rounding rules, so the bytes are identical.
            let ours = try QuantizedMatrix(
                quantizing: x, rows: rows, cols: cols, type: t, kernels: try kernels(.scalar))
            XCTAssertEqual(ours.bytes, theirs, "\(t) quantize")
        }
    }
}
