import Foundation
import Testing

@testable import BitFleetFetch

/// Builds .npy bytes (any version, any header text) for decoder tests.
enum Npy {
    static func header(descr: String, fortran: Bool = false, shape: [Int]) -> String {
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        return "{'descr': '\(descr)', 'fortran_order': \(fortran ? "True" : "False"), 'shape': (\(dims)), }"
    }

    static func file(version: UInt8 = 1, headerText: String, data: [UInt8]) -> [UInt8] {
        let pre = version == 1 ? 10 : 12
        var h = Array(headerText.utf8)
        let total = pre + h.count + 1
        let pad = (64 - total % 64) % 64
        h += [UInt8](repeating: 0x20, count: pad) + [0x0a]
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version, 0]
        if version == 1 {
            out += [UInt8(h.count & 0xff), UInt8(h.count >> 8)]
        } else {
            out += [UInt8(h.count & 0xff), UInt8((h.count >> 8) & 0xff), UInt8((h.count >> 16) & 0xff), UInt8(h.count >> 24)]
        }
        return out + h + data
    }

    static func uint8(_ values: [UInt8], shape: [Int], version: UInt8 = 1) -> [UInt8] {
        file(version: version, headerText: header(descr: "|u1", shape: shape), data: values)
    }

    static func float32(_ values: [Float], shape: [Int], version: UInt8 = 1, descr: String = "<f4") -> [UInt8] {
        var data: [UInt8] = []
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { data += $0 } }
        return file(version: version, headerText: header(descr: descr, shape: shape), data: data)
    }
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// The HTTP fixture (Ops/testing/http_fixture.py) as a subprocess, shared by all tests of this process.
/// It exits when our end of its stdin pipe closes, i.e. when this test process ends however it ends.
final class HTTPFixture: @unchecked Sendable {
    let process: Process
    let stdinPipe: Pipe
    let port: Int
    let root: URL

    static let shared: HTTPFixture = {
        do { return try HTTPFixture() } catch { fatalError("cannot start the HTTP fixture: \(error)") }
    }()

    static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    static let sampleNpy = Npy.uint8((0..<8).map { UInt8($0 * 30) }, shape: [2, 4])
    static let sampleJSON = "[[0.1, 0.2, 0.3, 0.4], [1, 0, 0.5, 0.25]]\n"
    static let sampleNDJSON = "{\"custom_id\": \"a\", \"input\": [0, 0.5, 1, 0.25]}\n[0.1, 0.2, 0.3, 0.4]\n"

    /// An HTTPS instance with a fresh self-signed certificate for 127.0.0.1 (nil if openssl is missing).
    static let tls: (fixture: HTTPFixture, certPath: String)? = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bitfleet-fetch-tls-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let cert = dir.appendingPathComponent("cert.pem").path, key = dir.appendingPathComponent("key.pem").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                       "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                       "-addext", "subjectAltName=IP:127.0.0.1"]
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        guard let fx = try? HTTPFixture(tlsCert: cert, tlsKey: key, name: "tls") else { return nil }
        return (fx, cert)
    }()

    /// An instance bound to [::1] (nil where the host has no IPv6 loopback).
    static let ipv6: HTTPFixture? = try? HTTPFixture(name: "ipv6", bind: "::1")

    let scheme: String

    init(tlsCert: String? = nil, tlsKey: String? = nil, name: String = "plain", bind: String = "127.0.0.1") throws {
        scheme = tlsCert == nil ? "http" : "https"
        root = FileManager.default.temporaryDirectory.appendingPathComponent("bitfleet-fetch-fixture-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: root)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try Data(HTTPFixture.sampleNpy).write(to: root.appendingPathComponent("sample.npy"))
        try Data(HTTPFixture.sampleJSON.utf8).write(to: root.appendingPathComponent("sample.json"))
        try Data(HTTPFixture.sampleNDJSON.utf8).write(to: root.appendingPathComponent("sample.ndjson"))
        // Compressible and large enough that half a gzip stream is clearly not the whole body.
        var big = "["
        for i in 0..<2000 { big += (i == 0 ? "" : ",") + "[\(i % 7), \(i % 5), \(i % 3), \(i % 2)]" }
        big += "]"
        try Data(big.utf8).write(to: root.appendingPathComponent("many.json"))

        let script = HTTPFixture.repoRoot.appendingPathComponent("Ops/testing/http_fixture.py").path
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, "--root", root.path, "--port", "0", "--bind", bind]
            + (tlsCert.map { ["--tls-cert", $0, "--tls-key", tlsKey ?? ""] } ?? [])
        stdinPipe = Pipe()
        let out = Pipe()
        process.standardInput = stdinPipe
        process.standardOutput = out
        try process.run()
        var line: [UInt8] = []
        let handle = out.fileHandleForReading
        while !line.contains(0x0a) {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("PORT "), let p = Int(text.dropFirst(5).prefix(while: { $0.isNumber })) else {
            throw NSError(domain: "fixture", code: 1, userInfo: [NSLocalizedDescriptionKey: "bad first line '\(text)'"])
        }
        port = p
    }

    func url(_ path: String, host: String = "127.0.0.1") -> String { "\(scheme)://\(host):\(port)\(path)" }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
func closedPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    precondition(fd >= 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    close(fd)
    return Int(UInt16(bigEndian: addr.sin_port))
}

func localPolicy(_ tweak: (inout FetchPolicy) -> Void = { _ in }) -> FetchPolicy {
    var p = FetchPolicy()
    p.allowedNetworks = ["127.0.0.1/32"]
    p.totalTimeout = 20
    tweak(&p)
    return p
}

/// Runs `get` and returns the FetchError it must throw.
func fetchError(_ url: String, policy: FetchPolicy, headers: [String] = []) throws -> FetchError {
    let client = try HTTPClient(policy: policy)
    do {
        let r = try client.get(url, headers: headers)
        Issue.record("expected an error for \(url), got HTTP \(r.status) with \(r.body.count) bytes")
        return FetchError(.other, "no error")
    } catch {
        return error
    }
}

func decodeError(
    _ body: [UInt8], format: String? = nil, contentType: String? = nil, url: String = "http://x/input",
    features: Int = 4, maxSamples: Int = 1_000_000
) -> DecodeError {
    do {
        let b = try InputDecoder.decode(body, format: format, contentType: contentType, url: url, features: features, maxSamples: maxSamples)
        Issue.record("expected a DecodeError, decoded \(b.samples) samples")
        return DecodeError("no error")
    } catch {
        return error
    }
}
