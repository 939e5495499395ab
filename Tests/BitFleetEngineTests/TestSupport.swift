import Foundation
@testable import BitFleetEngine

enum TestSupport {
    /// The repository root, found from this file's path (the directory holding Ops/models/random_model.py).
    static func repoRoot(_ file: String = #filePath) -> String {
        var url = URL(fileURLWithPath: file).deletingLastPathComponent()
        while url.path != "/" {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Ops/models/random_model.py").path) {
                return url.path
            }
            url = url.deletingLastPathComponent()
        }
        fatalError("cannot find the repository root from \(file)")
    }

    struct CommandFailed: Error, CustomStringConvertible {
        var description: String
    }

    @discardableResult
    static func run(_ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        if p.terminationStatus != 0 {
            throw CommandFailed(description: "\(arguments.joined(separator: " ")) failed (\(p.terminationStatus)): "
                + String(decoding: e, as: UTF8.self))
        }
        return String(decoding: o, as: UTF8.self)
    }

    static func tempDir(_ tag: String) -> String {
        let dir = NSTemporaryDirectory() + "bitfleet-engine-tests-\(getpid())-\(tag)-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    struct ModelSpec: CustomStringConvertible, Sendable {
        var features: Int, stem: Int, experts: Int, topK: Int, hidden: [Int], classes: Int, planes: Int
        var seed: Int, samples: Int
        var routerTies = false
        /// Format v2 conv front: [channels, kernel, stride, padding, pool] over an input of `shape` [height, width], and
        /// optionally a 6th value, the weight bits (2: format v5).
        var conv: [Int]? = nil
        var shape: [Int]? = nil
        /// Format v3 two-level router: this many groups of experts.
        var routerGroups: Int? = nil
        /// Format v4 second conv layer: [channels, kernel, stride, pool] over the conv front's pooled map.
        var conv2: [Int]? = nil
        /// Format v6: threshold levels (1 or 2) of each hidden layer.
        var hiddenLevels: [Int]? = nil
        var description: String {
            let c = conv.map { " conv\($0) on \(shape ?? [])" } ?? ""
            let c2 = (conv2.map { " conv2\($0)" } ?? "") + (hiddenLevels.map { " levels\($0)" } ?? "")
            let g = routerGroups.map { " G\($0)" } ?? ""
            return "D\(features) S\(stem) E\(experts) k\(topK) H\(hidden) C\(classes) P\(planes) M\(samples)\(routerTies ? " ties" : "")\(c)\(c2)\(g)"
        }
    }

    /// Runs Ops/models/random_model.py into a new temp dir and unpacks expected.npz into .npy files there.
    static func makeRandomModel(_ spec: ModelSpec) throws -> String {
        let dir = tempDir("model-\(spec.seed)")
        let root = repoRoot()
        var args = ["python3", root + "/Ops/models/random_model.py", dir,
                    "--features", "\(spec.features)", "--stem", "\(spec.stem)", "--experts", "\(spec.experts)",
                    "--top-k", "\(spec.topK)", "--hidden", spec.hidden.map(String.init).joined(separator: ","),
                    "--classes", "\(spec.classes)", "--planes", "\(spec.planes)", "--seed", "\(spec.seed)",
                    "--samples", "\(spec.samples)"]
        if spec.routerTies { args.append("--router-ties") }
        if let g = spec.routerGroups { args += ["--router-groups", "\(g)"] }
        if let c = spec.conv, let s = spec.shape {
            args += ["--conv", c.map(String.init).joined(separator: ","), "--shape", s.map(String.init).joined(separator: ",")]
        }
        if let c2 = spec.conv2 { args += ["--conv2", c2.map(String.init).joined(separator: ",")] }
        if let l = spec.hiddenLevels { args += ["--hidden-levels", l.map(String.init).joined(separator: ",")] }
        try run(args)
        try run(["python3", "-c",
                 "import numpy as np, sys; d = np.load(sys.argv[1] + '/expected.npz')\n"
                 + "for k in d.files: np.save(sys.argv[1] + '/expected_' + k + '.npy', d[k])", dir])
        return dir
    }

    /// A minimal .npy reader (little-endian u1, i8, f4; C order).
    struct NPY {
        var shape: [Int]
        var descr: String
        var data: Data

        init(path: String) throws {
            let d = try Data(contentsOf: URL(fileURLWithPath: path))
            guard d.count > 10, d.prefix(6) == Data([0x93]) + Data("NUMPY".utf8) else { throw CommandFailed(description: "\(path): not npy") }
            let major = d[d.startIndex + 6]
            let headerLen: Int
            let headerStart: Int
            if major == 1 {
                headerLen = Int(d[d.startIndex + 8]) | Int(d[d.startIndex + 9]) << 8
                headerStart = 10
            } else {
                headerLen = Int(d[d.startIndex + 8]) | Int(d[d.startIndex + 9]) << 8 | Int(d[d.startIndex + 10]) << 16 | Int(d[d.startIndex + 11]) << 24
                headerStart = 12
            }
            let header = String(decoding: d[(d.startIndex + headerStart)..<(d.startIndex + headerStart + headerLen)], as: UTF8.self)
            func field(_ key: String) -> String {
                let r = header.range(of: "'\(key)': ")!
                return String(header[r.upperBound...])
            }
            let descrText = field("descr")
            descr = String(descrText.dropFirst().prefix { $0 != "'" })
            precondition(field("fortran_order").hasPrefix("False"))
            let shapeText = field("shape").dropFirst().prefix { $0 != ")" }
            shape = shapeText.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            data = d.subdata(in: (d.startIndex + headerStart + headerLen)..<d.endIndex)
        }

        var count: Int { shape.reduce(1, *) }

        func ints() -> [Int] {
            switch descr {
            case "<i8": return data.withUnsafeBytes { raw in (0..<count).map { Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) } }
            case "|u1": return data.map { Int($0) }
            default: fatalError("ints() of \(descr)")
            }
        }

        func floats() -> [Float] {
            precondition(descr == "<f4", "floats() of \(descr)")
            return data.withUnsafeBytes { raw in (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) } }
        }

        func bytes() -> [UInt8] {
            precondition(descr == "|u1")
            return [UInt8](data)
        }
    }

    static func npy(_ dir: String, _ name: String) throws -> NPY { try NPY(path: dir + "/" + name + ".npy") }

    /// Relative closeness for float32 results computed in the same order by numpy (exp may differ by an ulp).
    static func close(_ a: Float, _ b: Float, rel: Float = 1e-5, abs: Float = 1e-6) -> Bool {
        Swift.abs(a - b) <= rel * Swift.abs(b) + abs
    }
}
