import Foundation
import Testing

@testable import BitFleetFetch

@Suite("Input decoders")
struct DecoderTests {
    /// JSON numbers with 16–19 significant digits (float32 values printed in full, as numpy's tolist() writes them)
    /// take a fast path; every one decodes to the Float that strtod's Double rounds to, including values at and a
    /// few ulps around the points halfway between two Floats (where the fast path must step aside).
    @Test func longJSONNumbersDecodeToTheFloatOfStrtod() throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 11
        }
        var texts: [String] = []
        for _ in 0..<30_000 {
            let f = Float(bitPattern: 0x3000_0000 + UInt32(next() % 0x1F00_0000))
            texts.append("\(Double(f))")
            texts.append(String(format: "%.19g", Double(f) * (1 + Double(next() % 1000) * 1e-12)))
        }
        for _ in 0..<15_000 {
            let f = Float(bitPattern: 0x3800_0000 + UInt32(next() % 0x0800_0000))
            let mid = (Double(f) + Double(f.nextUp)) / 2
            var below = mid, above = mid
            texts.append("\(mid)")
            texts.append(String(format: "%.19g", mid))
            for _ in 0..<4 {
                below = below.nextDown
                above = above.nextUp
                texts.append("\(below)")
                texts.append("\(above)")
                texts.append(String(format: "%.18g", below))
                texts.append(String(format: "%.18g", above))
            }
        }
        // Fractions with leading zeros, long runs of zeros and nines, short and long (the digit counting across
        // eight-digit chunks).
        for _ in 0..<1000 {
            let x = Double(next() % 1_000_000_007) / 1e12
            texts.append(String(format: "%.17f", x))
            texts.append(String(format: "%.20f", x))
            texts.append(String(format: "%.9f", x * 1e3))
        }
        texts += ["0.00000000", "0.000000001", "0.10000000000000000", "0.99999999999999999", "0.9999999999999999999",
                  "1.00000000000000000001", "12345678.12345678", "0.0000000012345678901234", "-0.5098040103912354"]
        let body = "[" + texts.map { "[\($0)]" }.joined(separator: ",") + "]"
        let batch = try InputDecoder.decode(Array(body.utf8), format: "json", contentType: nil, url: "", features: 1)
        guard case .float32(let values) = batch.values else { Issue.record("not float32"); return }
        #expect(values.count == texts.count)
        var wrong = 0
        for (index, text) in texts.enumerated() where values[index] != Float(strtod(text, nil)) {
            wrong += 1
            if wrong <= 5 { Issue.record("\(text) decoded to \(values[index]), strtod gives \(Float(strtod(text, nil)))") }
        }
        #expect(wrong == 0)
    }

    // --- npy ----------------------------------------------------------------------------------------------------

    @Test(arguments: [UInt8(1), 2, 3])
    func npyUInt8AllVersions(version: UInt8) throws {
        let body = Npy.uint8([1, 2, 3, 4, 5, 6, 7, 8], shape: [2, 4], version: version)
        let b = try InputDecoder.decode(body, format: nil, contentType: nil, url: "http://x/in", features: 4)
        #expect(b.samples == 2 && b.features == 4 && b.format == .npy && b.customIDs == nil)
        guard case .uint8(let v) = b.values else { Issue.record("uint8 expected"); return }
        #expect(v == [1, 2, 3, 4, 5, 6, 7, 8])
    }

    @Test(arguments: [UInt8(1), 2, 3])
    func npyFloat32AllVersions(version: UInt8) throws {
        let vals: [Float] = [0, 0.5, 1, 0.25, -0.0, 1e-3, 0.75, 0.125]
        let b = try InputDecoder.decode(Npy.float32(vals, shape: [2, 4], version: version), format: "npy", contentType: nil, url: "", features: 4)
        guard case .float32(let v) = b.values else { Issue.record("float32 expected"); return }
        #expect(v == vals)
    }

    @Test func npyShapes() throws {
        let one = try InputDecoder.decode(Npy.uint8([1, 2, 3, 4], shape: [4]), format: nil, contentType: nil, url: "", features: 4)
        #expect(one.samples == 1)
        let image = try InputDecoder.decode(Npy.uint8([1, 2, 3, 4], shape: [2, 2]), format: nil, contentType: nil, url: "", features: 4)
        #expect(image.samples == 1)
        let images = try InputDecoder.decode(Npy.uint8(Array(repeating: 7, count: 12), shape: [3, 2, 2]), format: nil, contentType: nil, url: "", features: 4)
        #expect(images.samples == 3)
        for descr in ["u1", "<u1"] {
            let b = Npy.file(headerText: Npy.header(descr: descr, shape: [1, 4]), data: [1, 2, 3, 4])
            #expect(try InputDecoder.decode(b, format: nil, contentType: nil, url: "", features: 4).samples == 1)
        }
    }

    static let npyCases: [(String, [UInt8], String)] = [
        ("bad magic", bytes("\u{7f}ELF not numpy at all"), "missing the \\x93NUMPY magic"),
        ("short file", [0x93] + bytes("NUMPY"), "missing the \\x93NUMPY magic"),
        ("version 4.0", [0x93] + bytes("NUMPY") + [4, 0, 10, 0] + bytes("{}        "), "unsupported npy format version 4.0"),
        ("version 1.1", [0x93] + bytes("NUMPY") + [1, 1, 10, 0] + bytes("{}        "), "unsupported npy format version 1.1"),
        ("header length 0", [0x93] + bytes("NUMPY") + [1, 0, 0, 0], "npy header length 0 is out of bounds"),
        ("header length huge", [0x93] + bytes("NUMPY") + [2, 0, 0xff, 0xff, 0xff, 0xff] + bytes("{'descr'"), "npy header length 4294967295 is out of bounds"),
        ("header truncated", [0x93] + bytes("NUMPY") + [1, 0, 0x40, 0] + bytes("{'descr': '|u1'"), "npy header truncated"),
        ("header not a dict", Npy.file(headerText: "descr=|u1", data: []), "bad npy header: expected '{'"),
        ("unterminated dict", Npy.file(headerText: "{'descr': '|u1', 'shape': (1, 4)", data: [1, 2, 3, 4]), "bad npy header"),
        ("unknown key", Npy.file(headerText: "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 4), 'x': 1}", data: [1, 2, 3, 4]), "unexpected key 'x'"),
        ("duplicate key", Npy.file(headerText: "{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (4,)}", data: [1, 2, 3, 4]), "duplicate key 'descr'"),
        ("missing shape", Npy.file(headerText: "{'descr': '|u1', 'fortran_order': False}", data: [1, 2, 3, 4]), "missing key 'shape'"),
        ("bad fortran value", Npy.file(headerText: "{'descr': '|u1', 'fortran_order': 0, 'shape': (4,)}", data: [1, 2, 3, 4]), "fortran_order must be True or False"),
        ("fortran order", Npy.file(headerText: Npy.header(descr: "|u1", fortran: true, shape: [1, 4]), data: [1, 2, 3, 4]), "fortran_order True is not supported"),
        ("float64", Npy.file(headerText: Npy.header(descr: "<f8", shape: [1, 4]), data: [UInt8](repeating: 0, count: 32)), "unsupported npy dtype '<f8'"),
        ("int32", Npy.file(headerText: Npy.header(descr: "<i4", shape: [1, 4]), data: [UInt8](repeating: 0, count: 16)), "unsupported npy dtype '<i4'"),
        ("object", Npy.file(headerText: Npy.header(descr: "|O", shape: [1, 4]), data: [UInt8](repeating: 0, count: 32)), "unsupported npy dtype '|O'"),
        ("big-endian float", Npy.file(headerText: Npy.header(descr: ">f4", shape: [1, 4]), data: [UInt8](repeating: 0, count: 16)), "big-endian"),
        ("wrong width", Npy.uint8([UInt8](repeating: 1, count: 6), shape: [2, 3]), "npy shape (2, 3): each sample has 3 features, model expects 4"),
        ("wrong width 1-D", Npy.uint8([1, 2, 3], shape: [3]), "npy shape (3,): each sample has 3 features, model expects 4"),
        ("scalar", Npy.file(headerText: "{'descr': '|u1', 'fortran_order': False, 'shape': (), }", data: [1]), "npy shape () is a scalar"),
        ("1-tuple without comma", Npy.file(headerText: "{'descr': '|u1', 'fortran_order': False, 'shape': (4), }", data: [1, 2, 3, 4]), "trailing comma"),
        ("negative dim", Npy.file(headerText: "{'descr': '|u1', 'fortran_order': False, 'shape': (-1, 4), }", data: [1, 2, 3, 4]), "expected a non-negative integer"),
        ("truncated data", Npy.uint8([1, 2, 3, 4, 5, 6, 7], shape: [2, 4]), "npy data truncated: shape (2, 4) declares 8 bytes of data but the body has 7"),
        ("truncated float data", Array(Npy.float32([1, 2, 3, 4], shape: [1, 4]).dropLast(2)), "npy data truncated"),
        ("trailing data", Npy.uint8([1, 2, 3, 4, 5, 6, 7, 8, 9], shape: [2, 4]), "1 unexpected trailing bytes"),
        ("huge shape", Npy.file(headerText: Npy.header(descr: "|u1", shape: [1_000_000_000_000, 4]), data: [1, 2, 3, 4]), "declares 4000000000000 bytes of data but the body has 4"),
        ("huge dimension", Npy.file(headerText: Npy.header(descr: "|u1", shape: [1 << 41, 4]), data: [1, 2, 3, 4]), "dimension 2199023255552 exceeds 1099511627776"),
        ("overflowing shape", Npy.file(headerText: Npy.header(descr: "<f4", shape: [1 << 38, 1 << 38, 4]), data: [1, 2, 3, 4]), "is too large (overflows)"),
        ("zero next to a huge dimension (libFuzzer find)", Npy.file(headerText: Npy.header(descr: "<f4", shape: [0, 6_000_000_000_000_002_660, 4]), data: []), "dimension 6000000000000002660 exceeds"),
        ("zero next to dims whose product overflows", Npy.file(headerText: Npy.header(descr: "|u1", shape: [0, 1 << 39, 1 << 39, 1 << 39]), data: []), "is too large (overflows)"),
        ("dimension overflow", Npy.file(headerText: "{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999999, 4), }", data: []), "shape dimension overflows"),
        ("zero samples", Npy.uint8([], shape: [0, 4]), "npy shape (0, 4) has no samples"),
        ("NaN", Npy.float32([0, 1, 0, 1, 0, 0, .nan, 0], shape: [2, 4]), "sample 1 feature 2 is NaN"),
        ("+inf", Npy.float32([0, .infinity, 0, 1], shape: [1, 4]), "sample 0 feature 1 is +inf"),
        ("-inf", Npy.float32([0, 0, 0, -.infinity], shape: [1, 4]), "sample 0 feature 3 is -inf"),
        ("non-ASCII header", Npy.file(headerText: "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 4), 'é': 1}", data: [1, 2, 3, 4]), "non-ASCII byte"),
    ]

    @Test(arguments: npyCases)
    func npyMalformed(name: String, body: [UInt8], expected: String) {
        let e = decodeError(body, format: "npy")
        #expect(e.message.contains(expected), "\(name): got '\(e.message)'")
    }

    @Test func npyNaNNamesSample() {
        let e = decodeError(Npy.float32([0, 1, 0, 1, 0, 0, .nan, 0], shape: [2, 4]))
        #expect(e.sampleIndex == 1)
    }

    @Test func maxSamples() {
        let e = decodeError(Npy.uint8([UInt8](repeating: 0, count: 12), shape: [3, 4]), maxSamples: 2)
        #expect(e.message.contains("input has 3 samples, the limit is 2"))
        let j = decodeError(bytes("[[1,2,3,4],[1,2,3,4],[1,2,3,4]]"), maxSamples: 2)
        #expect(j.message.contains("more than 2 samples"))
    }

    // --- JSON ---------------------------------------------------------------------------------------------------

    @Test func jsonForms() throws {
        let one = try InputDecoder.decode(bytes(" [0.5, 1, 0, 2.5e-1]\n"), format: "json", contentType: nil, url: "", features: 4)
        #expect(one.samples == 1)
        guard case .float32(let v) = one.values else { Issue.record("float32 expected"); return }
        #expect(v == [0.5, 1, 0, 0.25])
        let many = try InputDecoder.decode(bytes("[[1,2,3,4],[5,6,7,8],[-0.0,1E2,3.5,4]]"), format: "json", contentType: nil, url: "", features: 4)
        #expect(many.samples == 3 && many.values.count == 12 && many.customIDs == nil)
        let objs = try InputDecoder.decode(
            bytes(#"[{"custom_id": "x\u00e9\n", "input": [1,2,3,4], "meta": {"a": [1, "b", null, true]}}, {"input": [0,0,0,0]}]"#),
            format: "json", contentType: nil, url: "", features: 4)
        #expect(objs.customIDs == ["xé\n", nil])
    }

    static let jsonCases: [(String, String, String)] = [
        ("not JSON", "hello", "invalid JSON at byte 0: expected '['"),
        ("object at top", #"{"input": [1,2,3,4]}"#, "expected '['"),
        ("unterminated", "[1, 2, 3,", "invalid JSON at byte 9"),
        ("missing comma", "[[1,2,3,4] [1,2,3,4]]", "expected ',' or ']' after sample 0"),
        ("trailing comma", "[1,2,3,4,]", "expected a number"),
        ("trailing data", "[1,2,3,4] x", "unexpected data after the JSON array"),
        ("two documents", "[1,2,3,4][1,2,3,4]", "unexpected data after the JSON array"),
        ("empty array", "[]", "input has no samples (empty JSON array)"),
        ("empty sample", "[[]]", "sample 0 has 0 features, model expects 4"),
        ("wrong width", "[1,2,3]", "sample 0 has 3 features, model expects 4"),
        ("ragged", "[[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3]]", "sample 3 has 3 features, model expects 4"),
        ("too wide", "[[1,2,3,4,5]]", "sample 0 has 5 features, model expects 4"),
        ("mixed number and array", "[[1,2,3,4], 5]", "ragged input"),
        ("nested too deep", "[[[1],[2],[3],[4]]]", "sample 0 feature 0: expected a number, found an array"),
        ("string value", #"[1,"2",3,4]"#, "sample 0 feature 1: expected a number, found a string"),
        ("null value", "[1,null,3,4]", "expected a number, found null"),
        ("bool value", "[true,1,3,4]", "expected a number, found a boolean"),
        ("NaN", "[NaN,1,2,3]", "NaN and Infinity are not valid JSON numbers"),
        ("Infinity", "[1,Infinity,2,3]", "NaN and Infinity are not valid JSON numbers"),
        ("-Infinity", "[1,-Infinity,2,3]", "NaN and Infinity are not valid JSON numbers"),
        ("overflow to inf", "[1,1e39,2,3]", "sample 0 feature 1 value 1e39 is out of float32 range"),
        ("leading plus", "[+1,2,3,4]", "expected a number"),
        ("leading zero", "[01,2,3,4]", "expected ',' or ']' in sample 0"),
        ("bare dot", "[1.,2,3,4]", "digit expected after '.'"),
        ("bad exponent", "[1e,2,3,4]", "digit expected in exponent"),
        ("hex", "[0x10,2,3,4]", "expected ',' or ']'"),
        ("object without input", #"[{"custom_id": "a"}]"#, #"sample 0 is an object without an "input" array"#),
        ("input not array", #"[{"input": 5}]"#, #""input" of sample 0 must be an array of numbers"#),
        ("custom_id number", #"[{"custom_id": 7, "input": [1,2,3,4]}]"#, "custom_id of sample 0 must be a string"),
        ("duplicate custom_id", #"[{"custom_id": "a", "input": [1,2,3,4]}, {"custom_id": "a", "input": [1,2,3,4]}]"#, #"sample 1 has duplicate custom_id "a" (first used by sample 0)"#),
        ("bad escape", #"[{"custom_id": "a\q", "input": [1,2,3,4]}]"#, "invalid escape in string"),
        ("lone surrogate", #"[{"custom_id": "\ud800", "input": [1,2,3,4]}]"#, "unpaired surrogate"),
        ("control char", "[{\"custom_id\": \"a\u{01}\", \"input\": [1,2,3,4]}]", "control character in string"),
        ("unterminated string", #"[{"custom_id": "abc"#, "unterminated string"),
    ]

    @Test(arguments: jsonCases)
    func jsonMalformed(name: String, body: String, expected: String) {
        let e = decodeError(bytes(body), format: "json")
        #expect(e.message.contains(expected), "\(name): got '\(e.message)'")
    }

    @Test func jsonWrongWidthNamesSampleAndModelWidth() {
        var rows = Array(repeating: "[" + Array(repeating: "0", count: 784).joined(separator: ",") + "]", count: 3)
        rows.append("[" + Array(repeating: "0", count: 780).joined(separator: ",") + "]")
        let e = decodeError(bytes("[" + rows.joined(separator: ",") + "]"), format: "json", features: 784)
        #expect(e.message == "sample 3 has 780 features, model expects 784")
        #expect(e.sampleIndex == 3)
    }

    @Test func numberConversionMatchesStrtod() throws {
        // The fast decimal path must give exactly what a correctly rounded parse (strtod, then Float) gives.
        var rng = SplitMix64(seed: 0xF10A7)
        var texts: [String] = ["0", "-0", "0.1", "0.2", "0.3", "1e22", "1e23", "9007199254740993", "123456789012345678",
                               "0.000001", "1e-22", "1e-23", "3.4028234663852886e38", "1.17549435e-38", "1.4e-45", "2.5e-46"]
        for _ in 0..<20_000 {
            let intDigits = Int.random(in: 0...9, using: &rng), fracDigits = Int.random(in: 0...12, using: &rng)
            var t = Bool.random(using: &rng) ? "-" : ""
            t += intDigits == 0 ? "0" : String(Int.random(in: 1...9, using: &rng)) + (0..<(intDigits - 1)).map { _ in String(Int.random(in: 0...9, using: &rng)) }.joined()
            if fracDigits > 0 { t += "." + (0..<fracDigits).map { _ in String(Int.random(in: 0...9, using: &rng)) }.joined() }
            if Int.random(in: 0..<4, using: &rng) == 0 { t += "e" + String(Int.random(in: -40...20, using: &rng)) }
            texts.append(t)
        }
        let body = bytes("[" + texts.joined(separator: ",") + "]")
        let b = try InputDecoder.decode(body, format: "json", contentType: nil, url: "", features: texts.count)
        guard case .float32(let v) = b.values else { Issue.record("float32"); return }
        var mismatches = 0
        for (i, t) in texts.enumerated() where v[i].bitPattern != Float(Double(t)!).bitPattern {
            mismatches += 1
            if mismatches < 5 { Issue.record("\(t): decoded \(v[i]), strtod gives \(Float(Double(t)!))") }
        }
        #expect(mismatches == 0)
    }

    @Test func invalidUTF8InCustomID() {
        let body: [UInt8] = bytes(#"[{"custom_id": ""#) + [0xff, 0xfe] + bytes(#"", "input": [1,2,3,4]}]"#)
        #expect(decodeError(body, format: "json").message.contains("not valid UTF-8"))
    }

    // --- NDJSON -------------------------------------------------------------------------------------------------

    @Test func ndjsonForms() throws {
        let text = "{\"custom_id\": \"r1\", \"input\": [1,2,3,4]}\r\n\n[0.5,0.5,0.5,0.5]\n  \n{\"input\": [4,3,2,1], \"custom_id\": null}\n{\"custom_id\": \"r4\", \"extra\": {\"k\": [1,2]}, \"input\": [0,0,0,1]}"
        let b = try InputDecoder.decode(bytes(text), format: "ndjson", contentType: nil, url: "", features: 4)
        #expect(b.samples == 4)
        #expect(b.customIDs == ["r1", nil, nil, "r4"])
        guard case .float32(let v) = b.values else { Issue.record("float32"); return }
        #expect(Array(v[12..<16]) == [0, 0, 0, 1])
    }

    static let ndjsonCases: [(String, String, String)] = [
        ("blank only", "\n\n  \n", "input has no samples (no non-blank NDJSON lines)"),
        ("bad line", "[1,2,3,4]\nnot json\n", "invalid JSON at line 2 column 1: expected '[' or '{' to start sample 1 (found 'not')"),
        ("two values on a line", "[1,2,3,4] [1,2,3,4]\n", "line 1 column 11: unexpected data after sample 0"),
        ("wrong width", "[1,2,3,4]\n[1,2,3,4]\n{\"custom_id\": \"c\", \"input\": [1,2,3]}\n", "line 3: sample 2 has 3 features, model expects 4"),
        ("duplicate custom_id", "{\"custom_id\": \"a\", \"input\": [1,2,3,4]}\n{\"custom_id\": \"a\", \"input\": [1,2,3,4]}", #"line 2: sample 1 has duplicate custom_id "a" (first used by sample 0)"#),
        ("missing input", "{\"custom_id\": \"a\"}\n", #"line 1: sample 0 is an object without an "input" array"#),
        ("duplicate input key", "{\"input\": [1,2,3,4], \"input\": [1,2,3,4]}\n", #"duplicate key "input""#),
        ("custom_id array", "{\"custom_id\": [\"a\"], \"input\": [1,2,3,4]}\n", "custom_id of sample 0 must be a string"),
        ("NaN", "{\"input\": [NaN,1,2,3]}\n", "NaN and Infinity are not valid JSON numbers"),
        ("object split over lines", "{\"custom_id\": \"a\",\n \"input\": [1,2,3,4]}\n", "line 1"),
        ("deep extra", "{\"x\": " + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + ", \"input\": [1,2,3,4]}", "nesting too deep"),
        ("long custom_id", "{\"custom_id\": \"" + String(repeating: "a", count: 600) + "\", \"input\": [1,2,3,4]}", "string longer than 512 bytes"),
    ]

    @Test(arguments: ndjsonCases)
    func ndjsonMalformed(name: String, body: String, expected: String) {
        let e = decodeError(bytes(body), format: "ndjson")
        #expect(e.message.contains(expected), "\(name): got '\(e.message)'")
    }

    // --- raw ----------------------------------------------------------------------------------------------------

    @Test func rawForms() throws {
        let u = try InputDecoder.decode([1, 2, 3, 4, 5, 6, 7, 8], format: "raw:uint8:2x4", contentType: nil, url: "", features: 4)
        #expect(u.samples == 2 && u.format == .raw)
        let u2 = try InputDecoder.decode([1, 2, 3, 4, 5, 6, 7, 8], format: "raw:uint8", contentType: nil, url: "", features: 4)
        #expect(u2.samples == 2)
        var f: [UInt8] = []
        for x: Float in [1, 2, 3, 4, 0.5, 0.25, 0, 1] { withUnsafeBytes(of: x.bitPattern.littleEndian) { f += $0 } }
        let fb = try InputDecoder.decode(f, format: "RAW:float32:4", contentType: nil, url: "", features: 4)
        #expect(fb.samples == 2)
        let fb2 = try InputDecoder.decode(f, format: "raw:float32:2x4", contentType: nil, url: "", features: 4)
        guard case .float32(let v) = fb2.values else { Issue.record("float32"); return }
        #expect(v == [1, 2, 3, 4, 0.5, 0.25, 0, 1])
    }

    static let rawCases: [(String, [UInt8], String, String)] = [
        ("size mismatch", [1, 2, 3, 4, 5, 6, 7], "raw:uint8:2x4", "raw uint8 shape 2x4 needs 8 bytes but the body has 7 (truncated)"),
        ("not whole samples", [1, 2, 3, 4, 5, 6, 7], "raw:uint8", "not a whole number of 4-feature samples"),
        ("float not whole", [UInt8](repeating: 0, count: 18), "raw:float32", "not a whole number of 4-feature samples (16 bytes each)"),
        ("width mismatch", [UInt8](repeating: 0, count: 10), "raw:uint8:2x5", "each sample has 5 features, model expects 4"),
        ("unknown dtype", [1, 2, 3, 4], "raw:int16:4", "unsupported raw dtype 'int16'"),
        ("bad shape", [1, 2, 3, 4], "raw:uint8:4xq", "invalid raw shape '4xq'"),
        ("zero dim", [1, 2, 3, 4], "raw:uint8:0x4", "invalid raw shape '0x4'"),
        ("3-D shape", [1, 2, 3, 4], "raw:uint8:1x2x2", "invalid raw shape"),
        ("unknown format", [1, 2, 3, 4], "parquet", "unknown input format 'parquet'"),
        ("NaN", [0, 0, 0xc0, 0x7f] + [UInt8](repeating: 0, count: 12), "raw:float32:1x4", "sample 0 feature 0 is NaN"),
        ("huge", [1, 2, 3, 4], "raw:uint8:1099511627776x4", "needs 4398046511104 bytes but the body has 4"),
    ]

    @Test(arguments: rawCases)
    func rawMalformed(name: String, body: [UInt8], format: String, expected: String) {
        let e = decodeError(body, format: format)
        #expect(e.message.contains(expected), "\(name): got '\(e.message)'")
    }

    // --- detection ----------------------------------------------------------------------------------------------

    @Test func detection() {
        let npy = Npy.uint8([1, 2, 3, 4], shape: [1, 4])
        #expect(InputDecoder.detectFormat(npy, contentType: "application/json", url: "x.json") == .npy)
        #expect(InputDecoder.detectFormat(bytes("[1]"), contentType: "application/x-ndjson", url: "") == .ndjson)
        #expect(InputDecoder.detectFormat(bytes("[1]"), contentType: "text/plain", url: "http://h/a.ndjson?sig=1") == .ndjson)
        #expect(InputDecoder.detectFormat(bytes("[1]"), contentType: "application/json; charset=utf-8", url: "") == .json)
        #expect(InputDecoder.detectFormat(bytes("{\"input\":[1]}\n"), contentType: "application/json", url: "") == .ndjson)
        #expect(InputDecoder.detectFormat(bytes("[1]"), contentType: nil, url: "http://h/a.npy") == .npy)
        #expect(InputDecoder.detectFormat(bytes("[1]"), contentType: nil, url: "http://h/a") == .json)
    }

    @Test func emptyAndGzipBodies() {
        #expect(decodeError([]).message == "input is empty (0 bytes)")
        #expect(decodeError([0x1f, 0x8b, 8, 0, 0, 0]).message.contains("gzip-compressed"))
        #expect(decodeError(bytes("[1,2,3,4]"), features: 0).message.contains("model input width must be positive"))
        // The npy content type with a JSON body: detection says npy, the npy decoder names the cause.
        #expect(decodeError(bytes("[1,2,3,4]"), contentType: "application/x-npy").message.contains("NUMPY magic"))
    }
}
