import Crypto
import Foundation

/// Shape of the model a key belongs to; part of the key's identity.
public struct ModelShape: Sendable, Equatable {
    public var vocab: Int, dim: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int, hidden: Int
    /// A shape from its sizes.
    public init(vocab: Int, dim: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int, hidden: Int) {
        self.vocab = vocab
        self.dim = dim
        self.layers = layers
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.hidden = hidden
    }
    /// The shape of a Llama-family decoder.
    public init(_ c: LlamaConfig) {
        self.init(
            vocab: c.vocab, dim: c.dim, layers: c.layers, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim,
            hidden: c.hidden)
    }
    /// The shape of a BERT encoder.
    public init(_ c: BertConfig) {
        let hd = c.hiddenSize / c.numAttentionHeads
        self.init(
            vocab: c.vocabSize, dim: c.hiddenSize, layers: c.numHiddenLayers, heads: c.numAttentionHeads,
            kvHeads: c.numAttentionHeads, headDim: hd, hidden: c.intermediateSize)
    }
    var fields: [Int] { [vocab, dim, layers, heads, kvHeads, headDim, hidden] }
}

/// Deterministic random bytes from a key and a label: HMAC-SHA256(key, label || counter) blocks
/// (an HMAC-based expansion in the spirit of HKDF-Expand, unbounded in length).
struct KeyStream: RandomNumberGenerator {
    let key: SymmetricKey
    let label: [UInt8]
    var counter: UInt64 = 0
    var buffer: [UInt8] = []
    var pos = 0

    init(key: SymmetricKey, label: String) {
        self.key = key
        self.label = Array(label.utf8)
    }

    mutating func next() -> UInt64 {
        if pos + 8 > buffer.count {
            var msg = label
            withUnsafeBytes(of: counter.littleEndian) { msg.append(contentsOf: $0) }
            counter += 1
            buffer = Array(HMAC<SHA256>.authenticationCode(for: msg, using: key))
            pos = 0
        }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(buffer[pos + i]) << (8 * UInt64(i)) }
        pos += 8
        return v
    }

    /// Uniform in [0, 1) with 53 bits.
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }
    /// Standard normal (Box-Muller).
    mutating func gaussian() -> Double {
        let u1 = max(unit(), 1e-300)
        let u2 = unit()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}

/// The client's secret for one model: a 256-bit secret bound to the model's shape and identity.
/// Every transform (vocabulary permutation, residual rotation, per-head rotations, MLP
/// permutation and scales) is derived from it with HKDF-SHA256 and labelled streams, so the key
/// file stores no weights and no derived matrices.
public struct EncryptionKey: Sendable, Equatable {
    /// Magic bytes of a key file.
    public static let magic = Array("EEKEY001".utf8)
    /// Key file format version.
    public static let version: UInt32 = 1
    /// The 256-bit secret (32 bytes).
    public let secret: [UInt8] // 32 bytes
    /// SHA-256 of the model's identity (32 bytes): the key only fits that model.
    public let modelID: [UInt8] // 32 bytes: SHA-256 of the model's identity string
    /// The model shape the key's transforms are drawn for.
    public let shape: ModelShape

    /// A fresh key from the system CSPRNG.
    public init(shape: ModelShape, modelID: [UInt8]) throws {
        var g = SystemRandomNumberGenerator()
        try self.init(
            secret: (0..<32).map { _ in UInt8.random(in: 0...255, using: &g) }, shape: shape, modelID: modelID)
    }

    /// A key from a given 32-byte secret.
    public init(secret: [UInt8], shape: ModelShape, modelID: [UInt8]) throws {
        try require(secret.count == 32, "the secret must be 32 bytes (256 bits), got \(secret.count)")
        try require(modelID.count == 32, "the model id must be 32 bytes, got \(modelID.count)")
        try require(shape.fields.allSatisfy { $0 > 0 }, "model shape has a non-positive field: \(shape)")
        self.secret = secret
        self.modelID = modelID
        self.shape = shape
    }

    /// Identity of a GGUF model: SHA-256 over its architecture, shape and tensor directory
    /// (names, types, dims), so a key is refused for any other model.
    public static func modelID(gguf f: GGUFFile) throws -> [UInt8] {
        var s = "arch=" + (try f.string("general.architecture"))
        for name in f.tensorOrder {
            let t = try f.tensor(name)
            s += "|\(name):\(t.type.rawValue):\(t.dims)"
        }
        return Array(SHA256.hash(data: Data(s.utf8)))
    }

    /// Identity of a BERT model directory: SHA-256 over its config shape and the safetensors
    /// directory (names, dtypes, shapes, sorted).
    public static func modelID(bert directory: String) throws -> [UInt8] {
        let st = try SafeTensorsFile(path: directory + "/model.safetensors")
        var s = "arch=bert"
        for name in st.tensors.keys.sorted() {
            let t = st.tensors[name]!
            s += "|\(name):\(t.dtype):\(t.shape)"
        }
        return Array(SHA256.hash(data: Data(s.utf8)))
    }

    /// The derivation key for `purpose` (HKDF-SHA256, salt = model id).
    func subkey(_ purpose: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: secret), salt: modelID,
            info: Data("engine-ee-v1/\(purpose)".utf8), outputByteCount: 32)
    }

    func stream(_ purpose: String) -> KeyStream { KeyStream(key: subkey(purpose), label: purpose) }

    /// The key check value an encrypted model carries (GGUF `engine.key_check`, config.json
    /// `engine_key_check`): HMAC-SHA256 of the model id under a subkey derived for this purpose
    /// only, hex. It tells the client whether a model was encrypted with this key, and reveals
    /// nothing else about the key.
    public var checkValue: String {
        let mac = HMAC<SHA256>.authenticationCode(
            for: Data(modelID + Array("engine-ee-v1 key check".utf8)), using: subkey("key-check"))
        return mac.map { String(format: "%02x", $0) }.joined()
    }

    /// Throws unless `stored` (a model's key check value) is this key's: a wrong key, a plain model
    /// used with a key, or an encrypted model used without one would otherwise give fluent garbage.
    public func verify(modelCheck stored: String?, model: String) throws {
        guard let stored else {
            throw EngineError.invalidArgument(
                "\(model) is not an encrypted model (no key check value): run it without a key")
        }
        guard stored == checkValue else {
            throw EngineError.invalidArgument("\(model) was encrypted with another key: this key does not fit it")
        }
    }

    /// A uniformly random permutation of 0..<n (Fisher-Yates on the `purpose` stream).
    func permutation(_ n: Int, _ purpose: String) -> [Int] {
        var s = stream(purpose)
        var p = Array(0..<n)
        if n > 1 { for i in stride(from: n - 1, to: 0, by: -1) { p.swapAt(i, Int(s.next() % UInt64(i + 1))) } }
        return p
    }

    /// Vocabulary permutation P: token t is sent as P[t].
    public var vocabularyPermutation: [Int] { permutation(shape.vocab, "vocab") }

    /// Residual-stream rotation Q (dim x dim, row-major, double): Haar-random orthogonal from
    /// the QR of a Gaussian matrix with R's diagonal signs moved into Q.
    public func residualRotation() throws -> [Double] { try haar(shape.dim, "residual") }

    /// n x n Haar-random orthogonal matrix from the `purpose` stream (QR of a Gaussian matrix,
    /// R's diagonal signs moved into Q), row-major.
    func haar(_ n: Int, _ purpose: String) throws -> [Double] {
        var s = stream(purpose)
        var (q, r) = try LinearAlgebra.qr((0..<(n * n)).map { _ in s.gaussian() }, rows: n, cols: n)
        for j in 0..<n where r[j * n + j] < 0 { for i in 0..<n { q[i * n + j] = -q[i * n + j] } }
        return q
    }

    /// Rotation for post-LayerNorm models that fixes the all-ones direction (so mean-centering
    /// commutes with it): Q = H diag(1, R) H with R Haar-random on the (dim-1)-dimensional
    /// complement and H the Householder reflection swapping e_1 and 1/sqrt(dim). dim x dim, row-major.
    public func onesFixingRotation() throws -> [Double] {
        let n = shape.dim
        let r = try haar(n - 1, "residual-ones")
        var m = [Double](repeating: 0, count: n * n) // diag(1, R)
        m[0] = 1
        for i in 0..<(n - 1) { for j in 0..<(n - 1) { m[(i + 1) * n + j + 1] = r[i * (n - 1) + j] } }
        // H = I - 2 w w^T / (w.w), w = e_1 - u
        let u = 1 / Double(n).squareRoot()
        var w = [Double](repeating: -u, count: n)
        w[0] += 1
        let ww = w.reduce(0) { $0 + $1 * $1 }
        func applyH(rows a: inout [Double]) { // a := H a (columns of a)
            for j in 0..<n {
                var dot = 0.0
                for i in 0..<n { dot += w[i] * a[i * n + j] }
                let f = 2 * dot / ww
                for i in 0..<n { a[i * n + j] -= f * w[i] }
            }
        }
        func applyHRight(_ a: inout [Double]) { // a := a H
            for i in 0..<n {
                var dot = 0.0
                for j in 0..<n { dot += a[i * n + j] * w[j] }
                let f = 2 * dot / ww
                for j in 0..<n { a[i * n + j] -= f * w[j] }
            }
        }
        applyH(rows: &m)
        applyHRight(&m)
        return m
    }

    /// Hidden-dimension permutation Pi for post-LayerNorm models (stream index j is sent at Pi[j]).
    public var hiddenPermutation: [Int] { permutation(shape.dim, "pi") }

    /// Per layer and head, the query/key map M = R diag(s) (R Haar, s in [e^-0.5, e^0.5]) for
    /// attention without RoPE: q' = q M and k' = k M^-T keep q.k. Returns R (row-major) and s.
    public func queryKeyTransform(layer: Int, head: Int) throws -> (r: [Double], s: [Double]) {
        let r = try haar(shape.headDim, "qk/\(layer)/\(head)")
        var st = stream("qkscale/\(layer)/\(head)")
        return (r, (0..<shape.headDim).map { _ in exp(st.unit() - 0.5) })
    }

    /// Per layer and query head, one angle per RoPE pair (identical for q and k of the group).
    public func ropePairAngles(layer: Int) -> [Double] {
        var s = stream("rope/\(layer)")
        return (0..<(shape.kvHeads * shape.headDim / 2)).map { _ in 2 * Double.pi * s.unit() }
    }

    /// Per layer and KV head, an orthogonal headDim x headDim matrix A for V/O (v' = A v,
    /// o_proj columns of the group times A^T). Row-major, double.
    public func valueRotation(layer: Int, head: Int) throws -> [Double] {
        try haar(shape.headDim, "vo/\(layer)/\(head)")
    }

    /// MLP hidden permutation of a layer, and positive scales for SwiGLU's up/down pair.
    public func mlpPermutation(layer: Int) -> [Int] { permutation(shape.hidden, "mlp/\(layer)") }
    /// Positive SwiGLU scales of one layer's MLP hidden units.
    public func mlpScales(layer: Int) -> [Double] {
        var s = stream("mlpscale/\(layer)")
        return (0..<shape.hidden).map { _ in exp(s.unit() - 0.5) }
    }

    // MARK: file format
    // offset size field
    //      0    8 magic "EEKEY001"
    //      8    4 version (u32 LE, 1)
    //     12   28 shape: vocab, dim, layers, heads, kvHeads, headDim, hidden (u32 LE each)
    //     40   32 model id
    //     72   32 secret
    //    104   32 SHA-256 of bytes 0..<104
    // Total 136 bytes; written atomically with mode 0600.
    static let fileSize = 136

    /// Writes the key file atomically with mode 0600.
    /// `replace`: whether an existing file at `path` may be replaced (default: refuse).
    public func write(to path: String, replace: Bool = false) throws {
        var b = Self.magic
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        u32(Self.version)
        for f in shape.fields { u32(UInt32(f)) }
        b += modelID + secret
        b += Array(SHA256.hash(data: Data(b)))
        let w = try AtomicFileWriter(path: path, mode: 0o600, replace: replace)
        try w.write(b)
        try w.commit()
    }

    /// Reads and verifies a key file; with `forModel`, also checks that it belongs to that model.
    public static func read(path: String, forModel id: [UInt8]? = nil) throws -> EncryptionKey {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EngineError.io("cannot read key file \(path)")
        }
        let b = Array(data)
        guard b.count == fileSize else {
            throw EngineError.invalidFile(
                "\(path): a key file has \(fileSize) bytes, this one \(b.count) (truncated or not a key)")
        }
        guard Array(b[0..<8]) == magic else {
            throw EngineError.invalidFile("\(path): not an Engine key file (bad magic)")
        }
        func u32(_ o: Int) -> Int {
            Int(UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24)
        }
        guard UInt32(u32(8)) == version else {
            throw EngineError.unsupported("\(path): key file version \(u32(8)); this engine reads \(version)")
        }
        guard Array(SHA256.hash(data: Data(b[0..<104]))) == Array(b[104..<136]) else {
            throw EngineError.invalidFile("\(path): checksum mismatch (corrupt key file)")
        }
        let f = (0..<7).map { u32(12 + 4 * $0) }
        let shape = ModelShape(
            vocab: f[0], dim: f[1], layers: f[2], heads: f[3], kvHeads: f[4], headDim: f[5], hidden: f[6])
        let key = try EncryptionKey(secret: Array(b[72..<104]), shape: shape, modelID: Array(b[40..<72]))
        if let id, id != key.modelID {
            throw EngineError.invalidArgument("\(path): this key belongs to another model (wrong key)")
        }
        return key
    }
}
