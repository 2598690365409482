import CKernels
import Foundation

#if _endian(big)
    #error("index files are little-endian; writeVectors stores f16 rows in host order")
#endif

#if canImport(Glibc)
    import Glibc
#endif

extension IndexBuilder {
    // MARK: phase 7: payloads

    /// postings.bin with pwrite (no mapping: the build's memory stays its own): per-entry codes of
    /// residuals (pq4, binary) computed in a pass over the input; ids, rows and codes from memory
    /// list by list; vector payloads (f32, f16) streamed from the input in runs.
    func writePostings() throws {
        offsets = [Int](repeating: 0, count: heads)
        var pos = 0
        for h in 0..<heads {
            offsets[h] = pos
            pos += layout.pagedBytes(count: kept[h])
        }
        postingsBytes = pos
        let out = try ScratchFile(path: tmp + "/postings.bin", reserve: pos)
        postings = out
        let entryCodes = try residualCodes()
        try writeListHeads(entryCodes, to: out)
        codes = []
        if !o.payload.isCoded { try writeVectors(to: out) }
        assign = []
    }

    /// Bytes of one entry's residual code: pq4 M codes (one per byte here), binary ‖r‖ then P / 8
    /// bytes of signs; 0 for other payloads.
    var residualCodeBytes: Int { o.payload == .pq4 ? codeWidth : (o.payload == .binary ? 4 + codeWidth / 8 : 0) }

    /// Streams the input once more; for each block, the kept entries of its vectors sorted by
    /// entry number (lists are numbered in order, so one list's entries form runs).
    func forEachBlockEntries(
        _ what: String, _ body: ([(entry: Int32, head: Int32, row: Int32)]) throws -> Void
    ) throws {
        let R = o.maxReplicas
        var cursor = Array(lstart.dropLast())
        var writes: [(entry: Int32, head: Int32, row: Int32)] = []
        for b in 0..<blocks {
            let r = blockRange(b)
            try load(r, block)
            writes.removeAll(keepingCapacity: true)
            for i in r {
                for s in 0..<R {
                    let a = assign[i * R + s]
                    if a < 0 { break }
                    let h = Int(a)
                    let e = cursor[h]
                    guard e < lstart[h] + kept[h], Int(lvec[e]) == i else { continue } // a dropped replica
                    cursor[h] += 1
                    writes.append((Int32(e), Int32(h), Int32(i - r.lowerBound)))
                }
            }
            writes.sort { $0.entry < $1.entry }
            try body(writes)
            progress(what, b + 1)
        }
    }

    /// Residual codes (x - head) of every kept entry, indexed by entry number.
    func residualCodes() throws -> [UInt8] {
        let codeBytes = residualCodeBytes
        guard codeBytes > 0 else { return [] }
        var entryCodes = [UInt8](repeating: 0, count: lstart[heads] * codeBytes)
        let threads = max(1, kernels.threads)
        let (block, dim, pq, rotation, kernels, m) = (
            self.block, self.dim, self.pq, self.rotation, self.kernels, codeWidth
        )
        try forEachBlockEntries("residual codes") { writes in
            let parts = Threads.ranges(writes.count, parts: threads)
            var err: Error?
            headCent.withUnsafeBufferPointer { hp in
                entryCodes.withUnsafeMutableBytes { ec in
                    Threads.parallelFor(parts.count, threads: threads) { t in
                        for c0 in stride(from: parts[t].lowerBound, to: parts[t].upperBound, by: 1024) {
                            let part = writes[c0..<min(parts[t].upperBound, c0 + 1024)]
                            // residuals x - head of these entries (1,024 at a time: bounded scratch)
                            var r = [Float](repeating: 0, count: part.count * dim)
                            for (i, x) in part.enumerated() {
                                let src = block + Int(x.row) * dim
                                let c = hp.baseAddress! + Int(x.head) * dim
                                for j in 0..<dim { r[i * dim + j] = src[j] - c[j] }
                            }
                            if let pq {
                                do {
                                    let cs = try r.withUnsafeBufferPointer { try pq.encode($0, kernels: kernels) }
                                    for (i, x) in part.enumerated() {
                                        cs.withUnsafeBytes {
                                            (ec.baseAddress! + Int(x.entry) * codeBytes).copyMemory(
                                                from: $0.baseAddress! + i * m, byteCount: m)
                                        }
                                    }
                                } catch { err = error }
                            } else if let rotation {
                                Self.signCodes(r, part.map { Int($0.entry) }, rotation, dim: dim, into: ec, codeBytes)
                            }
                        }
                    }
                }
            }
            if let err { throw err }
        }
        return entryCodes
    }

    /// Binary codes of residual rows: ‖r‖ (f32) then the sign bits of the rotated r, at entry x codeBytes.
    static func signCodes(
        _ r: [Float], _ entries: [Int], _ rotation: SignRotation, dim: Int, into ec: UnsafeMutableRawBufferPointer,
        _ codeBytes: Int
    ) {
        var z = [Float](repeating: 0, count: rotation.padded)
        var words = [UInt64](repeating: 0, count: rotation.words)
        for (i, e) in entries.enumerated() {
            let dst = ec.baseAddress! + e * codeBytes
            var s: Float = 0
            for j in 0..<dim { s += r[i * dim + j] * r[i * dim + j] }
            dst.storeBytes(of: s.squareRoot().bitPattern.littleEndian, as: UInt32.self)
            r.withUnsafeBufferPointer { rp in
                z.withUnsafeMutableBufferPointer { zp in
                    rotation.rotate(rp.baseAddress! + i * dim, into: zp.baseAddress!)
                    words.withUnsafeMutableBufferPointer { rotation.signBits(zp.baseAddress!, into: $0.baseAddress!) }
                }
            }
            for (w, v) in words.enumerated() {
                dst.storeBytes(of: v.littleEndian, toByteOffset: 4 + 8 * w, as: UInt64.self)
            }
        }
    }

    /// Each list's ids, and for code payloads its rows and codes (whole list); vector payloads
    /// get their ids here and their vectors in `writeVectors`.
    func writeListHeads(_ entryCodes: [UInt8], to out: ScratchFile) throws {
        let codeBytes = residualCodeBytes
        let m = codeWidth
        var staging = [UInt8]()
        for h in 0..<heads where kept[h] > 0 {
            let k = kept[h]
            let len = o.payload.isCoded ? layout.bytes(count: k) : 8 * k
            let (rowsAt, codesAt, signsAt) = (layout.rows(count: k), layout.codes(count: k), layout.signBits(count: k))
            staging.removeAll(keepingCapacity: true)
            staging.append(contentsOf: repeatElement(0, count: len))
            staging.withUnsafeMutableBytes { r in
                for t in 0..<k {
                    let v = Int(lvec[lstart[h] + t])
                    let e = lstart[h] + t
                    r.storeBytes(of: (ids?[v] ?? UInt64(v)).littleEndian, toByteOffset: 8 * t, as: UInt64.self)
                    if o.payload.isCoded {
                        r.storeBytes(of: UInt32(v).littleEndian, toByteOffset: rowsAt + 4 * t, as: UInt32.self)
                    }
                    if o.payload == .pq8 {
                        for j in 0..<m {
                            r.storeBytes(of: codes[v * m + j], toByteOffset: codesAt + t * m + j, as: UInt8.self)
                        }
                    } else if o.payload == .binary {
                        // entry code = norm (4 bytes) then signs: separate arrays in the list
                        entryCodes.withUnsafeBytes { ec in
                            (r.baseAddress! + codesAt + 4 * t).copyMemory(
                                from: ec.baseAddress! + e * codeBytes, byteCount: 4)
                            (r.baseAddress! + signsAt + t * (m / 8)).copyMemory(
                                from: ec.baseAddress! + e * codeBytes + 4, byteCount: m / 8)
                        }
                    }
                }
                if o.payload == .pq4 {
                    // codes are < 16 by construction; packed in place after the ids and rows
                    _ = entryCodes.withUnsafeBufferPointer {
                        ck_pq_pack4(
                            $0.baseAddress! + lstart[h] * m, k, m,
                            (r.baseAddress! + codesAt).assumingMemoryBound(to: UInt8.self))
                    }
                }
            }
            try staging.withUnsafeBytes { try out.write($0.baseAddress!, len, at: offsets[h]) }
        }
    }

    /// f32 or f16 vectors streamed from the input, written in runs of consecutive entries.
    func writeVectors(to out: ScratchFile) throws {
        let pb = layout.vectorBytes
        var staging = [UInt8]()
        try forEachBlockEntries("writing lists") { writes in
            var w = 0
            while w < writes.count {
                var z = w + 1
                while z < writes.count && writes[z].head == writes[w].head && writes[z].entry == writes[z - 1].entry + 1
                {
                    z += 1
                }
                staging.removeAll(keepingCapacity: true)
                staging.append(contentsOf: repeatElement(0, count: (z - w) * pb))
                staging.withUnsafeMutableBytes { dst in
                    for (t, x) in writes[w..<z].enumerated() {
                        let src = block + Int(x.row) * dim
                        if o.payload == .f32 {
                            for j in 0..<dim {
                                dst.storeBytes(
                                    of: src[j].bitPattern.littleEndian, toByteOffset: t * pb + 4 * j, as: UInt32.self)
                            }
                        } else {
                            // f16 bit patterns written in host order: little-endian (below)
                            let row = (dst.baseAddress! + t * pb).bindMemory(to: UInt16.self, capacity: dim)
                            kernels.float16Bits(
                                UnsafeBufferPointer(start: src, count: dim),
                                into: UnsafeMutableBufferPointer(start: row, count: dim))
                        }
                    }
                }
                let h = Int(writes[w].head)
                let at = offsets[h] + layout.vectors(count: kept[h]) + (Int(writes[w].entry) - lstart[h]) * pb
                try staging.withUnsafeBytes { try out.write($0.baseAddress!, (z - w) * pb, at: at) }
                w = z
            }
        }
    }

    // MARK: phases 8-10: verification, heads.bin, commit

    /// Each list is read back from the file and checksummed (CRC-32C); the file is synced.
    func verifyLists() throws {
        let out = postings!
        crcs = [UInt32](repeating: 0, count: heads)
        let longest = (0..<heads).map { layout.bytes(count: kept[$0]) }.max() ?? 0
        var staging = [UInt8](repeating: 0, count: longest)
        try staging.withUnsafeMutableBytes { buf in
            for h in 0..<heads where kept[h] > 0 {
                let len = layout.bytes(count: kept[h])
                try out.read(buf.baseAddress!, len, at: offsets[h])
                crcs[h] = kernels.crc32c(UnsafeRawBufferPointer(start: buf.baseAddress!, count: len))
            }
        }
        try out.sync()
        lvec = []
    }

    /// heads.bin. Heads whose list ended empty (balanced k-means placed a centroid where no vector
    /// has it nearest: ~5% on i.i.d. clusters) are left out of the navigation: a probe spent on
    /// them reads nothing.
    func writeHeads() throws {
        let live = (0..<heads).filter { kept[$0] > 0 }
        var liveStart: [UInt32] = [0]
        for c in 0..<coarseCount {
            let inCluster = (Int(coarseStart[c])..<Int(coarseStart[c + 1])).filter { kept[$0] > 0 }.count
            liveStart.append(liveStart[c] + UInt32(inCluster))
        }
        if live.count < heads { say("index: \(heads - live.count) empty heads dropped, \(live.count) remain") }
        let file = HeadsFile(
            dim: dim, metric: o.metric, payload: o.payload, count: n, postingsBytes: postingsBytes, entries: entries,
            maxReplicas: o.maxReplicas, rngFactor: o.rngFactor, replicaEpsilon: o.replicaEpsilon,
            coarseCentroids: coarseCent, coarseStart: liveStart,
            headBits: kernels.float16Bits(live.flatMap { headCent[($0 * dim)..<(($0 + 1) * dim)] }),
            lists: live.map {
                HeadsFile.ListEntry(
                    offset: UInt64(offsets[$0]), bytes: UInt32(layout.bytes(count: kept[$0])), count: UInt32(kept[$0]),
                    crc: crcs[$0])
            },
            codeWidth: o.payload.isCoded ? codeWidth : 0,
            codeValues: pq?.centroids ?? rotation?.signs ?? [])
        let w = try AtomicFileWriter(path: tmp + "/heads.bin")
        try w.write(file.encoded(kernels: kernels))
        try w.commit()
        headsFile = file
    }

    /// Renames the finished directory into place; a previous index there is moved aside first
    /// and removed once the new one is in place.
    func commit() throws {
        if FileManager.default.fileExists(atPath: directory) {
            try Self.requireReplaceableIndex(directory, kernels: kernels)
        }
        try swapDirectoryIntoPlace(tmp, at: directory)
        committed = true
        say("index: written to \(directory): \(postingsBytes) bytes of posting lists (\(elapsed()))")
    }

    /// Files an index directory may hold.
    static let indexFiles: Set<String> = ["heads.bin", "postings.bin", "vectors.bin", "delta.log"]

    /// An existing directory is replaced only if it is empty or a complete index of ours: nothing
    /// but index files, and a heads.bin that verifies. Anything else is refused untouched.
    static func requireReplaceableIndex(_ directory: String, kernels: Kernels) throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        if names.isEmpty {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
                throw EngineError.invalidArgument("\(directory) exists and is not a directory: refusing to replace it")
            }
            return
        }
        let foreign = names.filter { !indexFiles.contains($0) }
        guard foreign.isEmpty, names.contains("heads.bin"), names.contains("postings.bin"),
            (try? HeadsFile(path: directory + "/heads.bin", kernels: kernels)) != nil
        else {
            let what =
                foreign.isEmpty ? "an incomplete or damaged index" : "other files (\(foreign.sorted().prefix(3)))"
            throw EngineError.invalidArgument(
                "\(directory) exists and holds \(what): refusing to replace it (remove it or choose another output)")
        }
    }
}
