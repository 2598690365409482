import CKernels
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension IndexBuilder {
    // MARK: phase 5: replicas

    /// A second pass places every vector in up to maxReplicas heads by the RNG rule (among the 32
    /// nearest heads of its nearest coarse clusters, squared L2); pq8 codes and vectors.bin rows
    /// (f32 vector + CRC-32C) are written in the same pass.
    func placeReplicas() throws {
        let R = o.maxReplicas
        let probe = Navigation.buildProbe(coarse: coarseCount, heads: heads)
        assign = [Int32](repeating: -1, count: n * R)
        assignDistance = [Float](repeating: 0, count: n * R)
        codes = [UInt8](repeating: 0, count: o.payload == .pq8 ? n * codeWidth : 0)
        let vw = o.payload.isCoded ? try AtomicFileWriter(path: tmp + "/vectors.bin") : nil
        let threads = max(1, kernels.threads)
        var rowBytes = [UInt8]()
        for b in 0..<blocks {
            let r = blockRange(b)
            let m = r.count
            try load(r, block)
            let chunk = 256
            let chunks = (m + chunk - 1) / chunk
            var failed = false
            let block = self.block
            let (eps, factor) = (o.replicaEpsilon, o.rngFactor)
            withNavigation { nav in
                assign.withUnsafeMutableBufferPointer { ap in
                    assignDistance.withUnsafeMutableBufferPointer { ad in
                        Threads.parallelFor(chunks, threads: threads) { ch in
                            for t in (ch * chunk)..<min(m, (ch + 1) * chunk) {
                                let i = r.lowerBound + t
                                let cand = nav.nearestHeads(
                                    block + t * dim, metric: .l2, probe: probe, k: Navigation.buildCandidates)
                                let chosen = nav.rngSelect(cand, maxReplicas: R, epsilon: eps, rngFactor: factor)
                                if chosen.isEmpty {
                                    failed = true
                                    continue
                                }
                                for (s, c) in chosen.enumerated() {
                                    ap[i * R + s] = Int32(c.head)
                                    ad[i * R + s] = c.dist
                                }
                            }
                        }
                    }
                }
            }
            if failed { throw EngineError.invalidArgument("a vector found no candidate head (internal error)") }
            if let pq, o.payload == .pq8 { try encodeBlock(pq, rows: r, threads: threads) }
            if let vw {
                rowBytes.removeAll(keepingCapacity: true)
                for t in 0..<m {
                    let s = rowBytes.count
                    UnsafeRawBufferPointer(start: block + t * dim, count: 4 * dim).withMemoryRebound(to: UInt8.self) {
                        rowBytes.append(contentsOf: $0)
                    }
                    let crc = rowBytes.withUnsafeBytes { kernels.crc32c(UnsafeRawBufferPointer(rebasing: $0[s...])) }
                    withUnsafeBytes(of: crc.littleEndian) { rowBytes.append(contentsOf: $0) }
                }
                try vw.write(rowBytes)
            }
            progress("replicas", b + 1)
        }
        try vw?.commit()
        say("index: replicas assigned\(pq != nil ? ", vectors encoded" : "") (\(elapsed()))")
    }

    /// pq8 codes of the block's rows (rows: their numbers in the input).
    func encodeBlock(_ pq: ProductQuantizer, rows r: Range<Int>, threads: Int) throws {
        let parts = Threads.ranges(r.count, parts: threads)
        var err: Error?
        let (block, dim, m, kernels) = (self.block, self.dim, codeWidth, self.kernels)
        codes.withUnsafeMutableBufferPointer { cp in
            Threads.parallelFor(parts.count, threads: threads) { t in
                let pr = parts[t]
                if pr.isEmpty { return }
                do {
                    let c = try pq.encode(
                        UnsafeBufferPointer(start: block + pr.lowerBound * dim, count: pr.count * dim), kernels: kernels
                    )
                    for i in 0..<c.count { cp[(r.lowerBound + pr.lowerBound) * m + i] = c[i] }
                } catch { err = error }
            }
        }
        if let err { throw err }
    }

    // MARK: phase 6: lists

    /// Lists (entries in vector order): primaries always kept; replicas nearest to the head
    /// first, up to the cap (0: 4x the mean list, at least 64).
    func capLists() {
        let R = o.maxReplicas
        lstart = [Int](repeating: 0, count: heads + 1)
        for a in assign where a >= 0 { lstart[Int(a) + 1] += 1 }
        for h in 0..<heads { lstart[h + 1] += lstart[h] }
        let total = lstart[heads]
        lvec = [Int32](repeating: 0, count: total)
        var ldist = [Float](repeating: 0, count: total)
        var lprim = [Bool](repeating: false, count: total)
        var fill = Array(lstart.dropLast())
        for i in 0..<n {
            for t in 0..<R where assign[i * R + t] >= 0 {
                let h = Int(assign[i * R + t])
                let e = fill[h]
                lvec[e] = Int32(i)
                ldist[e] = assignDistance[i * R + t]
                lprim[e] = t == 0
                fill[h] += 1
            }
        }
        assignDistance = []
        let cap = o.postingCap > 0 ? o.postingCap : max(64, 4 * total / heads)
        kept = (0..<heads).map { lstart[$0 + 1] - lstart[$0] }
        var dropped = 0
        for h in 0..<heads where kept[h] > cap {
            let a = lstart[h]
            var order = Array(a..<lstart[h + 1])
            order.sort { (lprim[$0] ? 0 : 1, ldist[$0]) < (lprim[$1] ? 0 : 1, ldist[$1]) }
            let keep = max(cap, order.prefix { lprim[$0] }.count)
            let chosen = order.prefix(keep).map { lvec[$0] }.sorted()
            for (t, v) in chosen.enumerated() { lvec[a + t] = v }
            dropped += kept[h] - keep
            kept[h] = keep
        }
        entries = kept.reduce(0, +)
        say(
            "index: \(entries) entries (\(String(format: "%.2f", Double(entries) / Double(n))) per vector), "
                + "cap \(cap), \(dropped) replicas dropped")
    }
}
