import Foundation
import Testing
@testable import BitFleetEngine

/// Corrupt, truncated and mismatched model files must throw a clear error, never crash.
@Suite("Model loader")
struct LoaderTests {
    static let spec = TestSupport.ModelSpec(features: 20, stem: 9, experts: 5, topK: 2, hidden: [12], classes: 3,
                                            planes: 8, seed: 21, samples: 8)

    /// A fresh copy of a valid small model.
    static func validModel() throws -> String {
        try TestSupport.makeRandomModel(spec)
    }

    static func weights(_ dir: String) -> [UInt8] {
        [UInt8](FileManager.default.contents(atPath: dir + "/model.safetensors")!)
    }

    static func write(_ dir: String, _ bytes: [UInt8]) {
        _ = FileManager.default.createFile(atPath: dir + "/model.safetensors", contents: Data(bytes))
    }

    /// Splits a safetensors file into (header text, data section).
    static func split(_ bytes: [UInt8]) -> (String, [UInt8]) {
        var n = 0
        for i in 0..<8 { n |= Int(bytes[i]) << (8 * i) }
        return (String(decoding: bytes[8..<(8 + n)], as: UTF8.self), Array(bytes[(8 + n)...]))
    }

    static func join(_ header: String, _ data: [UInt8]) -> [UInt8] {
        let h = Array(header.utf8)
        var out: [UInt8] = []
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: h.count >> (8 * i))) }
        return out + h + data
    }

    /// Rewrites the header text with `transform` and expects loading to fail with a message containing `needles`.
    static func expectHeaderEdit(_ transform: (String) -> String, _ needles: [String],
                                 sourceLocation: SourceLocation = #_sourceLocation) throws {
        let dir = try validModel()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (header, data) = split(weights(dir))
        let edited = transform(header)
        #expect(edited != header, "the edit did not change the header", sourceLocation: sourceLocation)
        write(dir, join(edited, data))
        expectLoadError(dir, needles, sourceLocation: sourceLocation)
    }

    static func expectLoadError(_ dir: String, _ needles: [String], sha: String? = nil,
                                sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try BinaryMoEModel.load(directory: dir, expectedSHA256: sha)
            Issue.record("loading succeeded, expected an error containing \(needles)", sourceLocation: sourceLocation)
        } catch let e as ModelError {
            for n in needles {
                #expect(e.message.contains(n), "message \"\(e.message)\" lacks \"\(n)\"", sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("unexpected error type: \(error)", sourceLocation: sourceLocation)
        }
    }

    /// Replaces the first match of a regular expression.
    static func replacing(_ pattern: String, with template: String) -> (String) -> String {
        { s in
            let re = try! NSRegularExpression(pattern: pattern)
            guard let m = re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) else { return s }
            return re.replacementString(for: m, in: s, offset: 0, template: template)
                .withCString { repl in (s as NSString).replacingCharacters(in: m.range, with: String(cString: repl)) }
        }
    }

    @Test func validModelLoadsAndHashMatchesPython() throws {
        let dir = try Self.validModel()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pythonHash = try TestSupport.run(["python3", TestSupport.repoRoot() + "/Ops/models/export.py", dir])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let model = try BinaryMoEModel.load(directory: dir, expectedSHA256: pythonHash)
        #expect(model.sha256 == pythonHash)
        #expect(model.mappedBytes == Self.weights(dir).count)
        #expect(model.config.name == "random-21")
        #expect(model.config.classes == ["class0", "class1", "class2"])
        // upper-case and "sha256:"-prefixed digests are accepted too
        _ = try BinaryMoEModel.load(directory: "file://" + dir + "/", expectedSHA256: "sha256:" + pythonHash.uppercased())
        _ = try BinaryMoEModel.load(directory: "file://" + dir.replacingOccurrences(of: "-", with: "%2d"))
        #expect(throws: ModelError.self) { try BinaryMoEModel.load(directory: "file://otherhost" + dir) }
    }

    @Test func wrongSHA256() throws {
        let dir = try Self.validModel()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Self.expectLoadError(dir, ["model.safetensors", "sha256 mismatch", String(repeating: "0", count: 64)],
                             sha: String(repeating: "0", count: 64))
    }

    @Test func truncatedFile() throws {
        let dir = try Self.validModel()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bytes = Self.weights(dir)
        Self.write(dir, Array(bytes[0..<(bytes.count - 10)]))
        Self.expectLoadError(dir, ["model.safetensors", "outside the file"])
        Self.write(dir, Array(bytes[0..<5]))
        Self.expectLoadError(dir, ["model.safetensors", "truncated"])
        Self.write(dir, Array(bytes[0..<40]))
        Self.expectLoadError(dir, ["model.safetensors", "bad header length"])
        Self.write(dir, [])
        Self.expectLoadError(dir, ["model.safetensors", "truncated"])
    }

    @Test func badHeaderLength() throws {
        let dir = try Self.validModel()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var bytes = Self.weights(dir)
        for i in 0..<8 { bytes[i] = 0xFF }
        Self.write(dir, bytes)
        Self.expectLoadError(dir, ["model.safetensors", "bad header length"])
        bytes = Self.weights(dir)
        bytes[0] = 1; for i in 1..<8 { bytes[i] = 0 }
        Self.write(dir, bytes)
        Self.expectLoadError(dir, ["model.safetensors", "bad header length 1"])
    }

    @Test func headerGarbage() throws {
        try Self.expectHeaderEdit({ h in String(h.map { $0 == "{" ? "<" : $0 }) }, ["model.safetensors", "not valid JSON"])
        try Self.expectHeaderEdit({ _ in "[1, 2, 3]" }, ["model.safetensors", "must be a JSON object"])
        try Self.expectHeaderEdit({ h in String(h.dropLast(3)) }, ["model.safetensors", "not valid JSON"])
    }

    @Test func wrongDtype() throws {
        try Self.expectHeaderEdit(Self.replacing(#""stem.threshold":\{"dtype":"I32""#, with: #""stem.threshold":{"dtype":"F32""#),
                                  ["model.safetensors", "\"stem.threshold\"", "dtype F32, expected I32"])
        try Self.expectHeaderEdit(Self.replacing(#""router.bias":\{"dtype":"F32""#, with: #""router.bias":{"dtype":"Q7""#),
                                  ["\"router.bias\"", "unknown dtype \"Q7\""])
    }

    @Test func wrongShape() throws {
        // same byte count, different shape
        try Self.expectHeaderEdit(Self.replacing(#""experts.out.scale":\{"dtype":"F32","shape":\[5,3\]"#,
                                                 with: #""experts.out.scale":{"dtype":"F32","shape":[3,5]"#),
                                  ["model.safetensors", "\"experts.out.scale\"", "shape [3, 5], expected [5, 3]"])
        // config disagrees with the file
        let dir = try Self.validModel()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = String(decoding: FileManager.default.contents(atPath: dir + "/config.json")!, as: UTF8.self)
        let edited = Self.replacing(#""stem_width": 9"#, with: #""stem_width": 10"#)(config)
        #expect(edited != config)
        _ = FileManager.default.createFile(atPath: dir + "/config.json", contents: Data(edited.utf8))
        Self.expectLoadError(dir, ["\"stem.weight\"", "expected [10, 3]", "stem_width=10"])
    }

    @Test func offsetsPastEnd() throws {
        try Self.expectHeaderEdit(Self.replacing(#""stem.threshold":\{"dtype":"I32","shape":\[9\],"data_offsets":\[\d+,\d+\]"#,
                                                 with: #""stem.threshold":{"dtype":"I32","shape":[9],"data_offsets":[1000000,1000036]"#),
                                  ["model.safetensors", "\"stem.threshold\"", "outside the file"])
        try Self.expectHeaderEdit(Self.replacing(#""stem.threshold":\{"dtype":"I32","shape":\[9\],"data_offsets":\[\d+,\d+\]"#,
                                                 with: #""stem.threshold":{"dtype":"I32","shape":[9],"data_offsets":[0,35]"#),
                                  ["\"stem.threshold\"", "needs 36"])
        try Self.expectHeaderEdit(Self.replacing(#""stem.threshold":\{"dtype":"I32","shape":\[9\],"data_offsets":\[\d+,\d+\]"#,
                                                 with: #""stem.threshold":{"dtype":"I32","shape":[9],"data_offsets":[-4,32]"#),
                                  ["\"stem.threshold\"", "bad data_offsets"])
        try Self.expectHeaderEdit(Self.replacing(#""stem.threshold":\{"dtype":"I32","shape":\[9\],"data_offsets":\[\d+,\d+\]"#,
                                                 with: #""stem.threshold":{"dtype":"I32","shape":[9],"data_offsets":[99999999999999999999999,1]"#),
                                  ["\"stem.threshold\"", "data_offsets"])
    }

    @Test func overlappingTensors() throws {
        // experts.out.bias is first in the data section (sorted by name within a dtype); point stem.threshold at it
        try Self.expectHeaderEdit(Self.replacing(#""stem.threshold":\{"dtype":"I32","shape":\[9\],"data_offsets":\[\d+,\d+\]"#,
                                                 with: #""stem.threshold":{"dtype":"I32","shape":[9],"data_offsets":[0,36]"#),
                                  ["model.safetensors", "overlap"])
    }

    @Test func missingTensor() throws {
        try Self.expectHeaderEdit(Self.replacing(#""router.bias":"#, with: #""router.biaz":"#),
                                  ["model.safetensors", "missing tensor \"router.bias\""])
        try Self.expectHeaderEdit(Self.replacing(#""experts.hidden.0.threshold":"#, with: #""experts.hidden.1.threshold":"#),
                                  ["missing tensor \"experts.hidden.0.threshold\""])
    }

    @Test func nonFiniteScale() throws {
        let dir = try Self.validModel()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bytes = Self.weights(dir)
        let (header, data) = Self.split(bytes)
        // find router.scale's offsets and write a NaN into its first element
        let re = try NSRegularExpression(pattern: #""router.scale":\{"dtype":"F32","shape":\[5\],"data_offsets":\[(\d+),"#)
        let m = try #require(re.firstMatch(in: header, range: NSRange(header.startIndex..., in: header)))
        let begin = Int((header as NSString).substring(with: m.range(at: 1)))!
        var d = data
        d[begin] = 0; d[begin + 1] = 0; d[begin + 2] = 0xC0; d[begin + 3] = 0x7F
        Self.write(dir, Self.join(header, d))
        Self.expectLoadError(dir, ["\"router.scale\"", "non-finite"])
    }

    @Test func configErrors() throws {
        let dir = try Self.validModel()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let original = String(decoding: FileManager.default.contents(atPath: dir + "/config.json")!, as: UTF8.self)
        func check(_ edit: (String) -> String, _ needles: [String], sourceLocation: SourceLocation = #_sourceLocation) {
            let edited = edit(original)
            #expect(edited != original, sourceLocation: sourceLocation)
            _ = FileManager.default.createFile(atPath: dir + "/config.json", contents: Data(edited.utf8))
            Self.expectLoadError(dir, ["config.json"] + needles, sourceLocation: sourceLocation)
        }
        check(Self.replacing(#""format_version": 1"#, with: #""format_version": 7"#), ["unsupported format_version 7"])
        // a two-level router needs format v3, a group count that divides the experts, and top_k within one group
        check(Self.replacing(#"\{"#, with: #"{"router_groups": 5, "#), ["\"router_groups\" needs format_version 3"])
        let v3 = Self.replacing(#""format_version": 1"#, with: #""format_version": 3"#)
        check({ Self.replacing(#"\{"#, with: #"{"router_groups": 2, "#)(v3($0)) }, ["router_groups must be at least 2 and divide experts=5"])
        check({ Self.replacing(#"\{"#, with: #"{"router_groups": 5, "#)(v3($0)) }, ["top_k=2 exceeds the 1 experts of one router group"])
        check({ Self.replacing(#"\{"#, with: #"{"router_groups": "5", "#)(v3($0)) }, ["\"router_groups\" must be an integer"])
        // a conv front needs format v2, a two-dimensional input_shape, and sane sizes
        let conv = #""conv": {"channels": 4, "kernel": 3, "stride": 1, "padding": 1, "pool": 2}, "#
        check(Self.replacing(#"\{"#, with: "{" + conv), ["\"conv\" needs format_version 2"])
        let v2 = Self.replacing(#""format_version": 1"#, with: #""format_version": 2"#)
        check({ Self.replacing(#"\{"#, with: "{" + conv)(v2($0)) }, ["conv front needs a two-dimensional input_shape"])
        let shaped = { (c: String) in { (s: String) in
            Self.replacing(#""input_shape": \[\s*20\s*\]"#, with: #""input_shape": [4, 5]"#)(Self.replacing(#"\{"#, with: "{" + c)(v2(s)))
        } }
        check(shaped(#""conv": {"channels": 65, "kernel": 3}, "#), ["conv.channels must be in 1...64"])
        check(shaped(#""conv": {"channels": 4, "kernel": 3, "padding": 3}, "#), ["conv.padding must be in 0..<kernel"])
        check(shaped(#""conv": {"channels": 4, "kernel": 3, "pool": 3}, "#), ["leaves no output on a 4×5 input"])
        // a kernel that does not fit the padded input leaves no position, also with a stride (rounded down)
        check(shaped(#""conv": {"channels": 4, "kernel": 7, "stride": 2, "padding": 1}, "#), ["leaves no output on a 4×5 input"])
        check(shaped(#""conv": {"kernel": 3}, "#), ["conv: missing required key \"channels\""])
        check(shaped(#""conv": {"channels": 4, "kernel": "3"}, "#), ["\"conv.kernel\" must be an integer"])
        // a v2 conv model's tensors are checked against the conv geometry: 2×3 pooled positions × 4 channels = 24
        let valid = shaped(#""conv": {"channels": 4, "kernel": 3, "padding": 1, "pool": 2}, "#)(original)
        _ = FileManager.default.createFile(atPath: dir + "/config.json", contents: Data(valid.utf8))
        Self.expectLoadError(dir, ["model.safetensors", "missing tensor \"conv.weight\"", "conv.channels=4"])
        // a second conv layer needs format v4 and a conv front, and must leave a position on the front's 2×2 map
        let front = #""conv": {"channels": 4, "kernel": 3, "padding": 1, "pool": 2}, "#
        check(shaped(front + #""conv2": {"channels": 8, "kernel": 2}, "#), ["\"conv2\" needs format_version 4"])
        let v4 = { (c: String) in { (s: String) in
            Self.replacing(#""format_version": 2"#, with: #""format_version": 4"#)(shaped(c)(s))
        } }
        check({ Self.replacing(#"\{"#, with: #"{"conv2": {"channels": 8, "kernel": 2}, "#)(
            Self.replacing(#""format_version": 1"#, with: #""format_version": 4"#)($0)) }, ["a conv2 block needs a conv block"])
        check(v4(front + #""conv2": {"channels": 257, "kernel": 2}, "#), ["conv2.channels must be in 1...256"])
        check(v4(front + #""conv2": {"channels": 8, "kernel": 2, "stride": 3}, "#), ["conv2.stride must be in 1...kernel"])
        check(v4(front + #""conv2": {"channels": 8, "kernel": 3}, "#), ["leaves no output on the conv front's 2×2 map"])
        check(v4(front + #""conv2": {"channels": 8, "kernel": 2, "pool": 2}, "#), ["leaves no output on the conv front's 2×2 map"])
        check(v4(front + #""conv2": {"kernel": 2}, "#), ["conv2: missing required key \"channels\""])
        // its tensors are checked against its geometry: 2×2×4 = 16 taps per filter
        let valid2 = v4(front + #""conv2": {"channels": 8, "kernel": 2}, "#)(original)
        _ = FileManager.default.createFile(atPath: dir + "/config.json", contents: Data(valid2.utf8))
        Self.expectLoadError(dir, ["model.safetensors", "missing tensor \"conv2.weight\"", "conv2.channels=8"])
        // 2-bit conv filters need format v5 and are 1 or 2 bits; their tensor holds both sign planes
        let twoBit = #""conv": {"channels": 4, "kernel": 3, "padding": 1, "pool": 2, "weight_bits": 2}, "#
        check(v4(twoBit), ["\"conv\": \"weight_bits\" needs format_version 5"])
        let v5 = { (c: String) in { (s: String) in
            Self.replacing(#""format_version": 2"#, with: #""format_version": 5"#)(shaped(c)(s))
        } }
        check(v5(#""conv": {"channels": 4, "kernel": 3, "padding": 1, "pool": 2, "weight_bits": 3}, "#),
              ["conv.weight_bits must be 1 or 2 (got 3)"])
        let valid5 = v5(twoBit)(original)
        _ = FileManager.default.createFile(atPath: dir + "/config.json", contents: Data(valid5.utf8))
        Self.expectLoadError(dir, ["model.safetensors", "missing tensor \"conv.weight\"", "conv.weight_bits=2"])
        // two-level hidden layers need format v6, one entry per hidden layer, each 1 or 2; a 2-level layer's
        // thresholds are [E, 2, H] and the layer after reads 2 H bits
        let v6 = Self.replacing(#""format_version": 1"#, with: #""format_version": 6"#)
        check(Self.replacing(#"\{"#, with: #"{"expert_hidden_levels": [2], "#), ["\"expert_hidden_levels\" needs format_version 6"])
        check({ Self.replacing(#"\{"#, with: #"{"expert_hidden_levels": [3], "#)(v6($0)) },
              ["expert_hidden_levels must list 1 or 2 for each of the 1 expert hidden layers (got [3])"])
        check({ Self.replacing(#"\{"#, with: #"{"expert_hidden_levels": [2, 2], "#)(v6($0)) },
              ["expert_hidden_levels must list 1 or 2 for each of the 1 expert hidden layers"])
        check({ Self.replacing(#"\{"#, with: #"{"expert_hidden_levels": "2", "#)(v6($0)) },
              ["\"expert_hidden_levels\" must be an array of integers"])
        let valid6 = Self.replacing(#"\{"#, with: #"{"expert_hidden_levels": [2], "#)(v6(original))
        _ = FileManager.default.createFile(atPath: dir + "/config.json", contents: Data(valid6.utf8))
        Self.expectLoadError(dir, ["model.safetensors", "\"experts.hidden.0.threshold\"", "expert_hidden_levels[0]=2"])
        // with one level in v6 the model loads as it is
        _ = FileManager.default.createFile(atPath: dir + "/config.json",
                                           contents: Data(Self.replacing(#"\{"#, with: #"{"expert_hidden_levels": [1], "#)(v6(original)).utf8))
        _ = try BinaryMoEModel.load(directory: dir)
        check(Self.replacing(#""format": "bitfleet.bmoe""#, with: #""format": "onnx""#), ["\"format\" must be \"bitfleet.bmoe\""])
        check(Self.replacing(#""top_k": 2,"#, with: ""), ["missing required key \"top_k\""])
        check(Self.replacing(#""top_k": 2"#, with: #""top_k": 6"#), ["top_k must be in 1...experts=5"])
        check(Self.replacing(#""stem_width": 9"#, with: #""stem_width": "nine""#), ["\"stem_width\" must be an integer"])
        check(Self.replacing(#""input_bit_planes": 8"#, with: #""input_bit_planes": 9"#), ["input_bit_planes must be in 1...8"])
        check(Self.replacing(#""input_shape": \[\s*20\s*\]"#, with: #""input_shape": [3, 7]"#), ["input_shape", "product 21"])
        check(Self.replacing(#"\{"#, with: "{{"), ["invalid JSON"])
        // unknown keys are ignored
        _ = FileManager.default.createFile(atPath: dir + "/config.json",
                                       contents: Data(Self.replacing(#"\{"#, with: #"{"extra": {"x": [1, 2.5e3, null, true]},"#)(original).utf8))
        _ = try BinaryMoEModel.load(directory: dir)
        try? FileManager.default.removeItem(atPath: dir + "/config.json")
        Self.expectLoadError(dir, ["config.json", "cannot open"])
    }

    @Test func suggestedRouterGroupsScoreTheFewestRows() {
        #expect(ModelConfig.suggestedRouterGroups(experts: 456) == 19)   // 19 + 24 = 43 rows instead of 456
        #expect(ModelConfig.suggestedRouterGroups(experts: 16) == 4)
        #expect(ModelConfig.suggestedRouterGroups(experts: 12) == 3)     // 3 + 4 = 7 (4 + 3 too: the first wins)
        for e in [1, 2, 3, 4, 7, 457] { #expect(ModelConfig.suggestedRouterGroups(experts: e) == nil, "\(e)") }
    }

    @Test func paddingBitsAreIgnored() throws {
        // stem rows are 20 bits = 3 bytes: the top 4 bits of every third byte are padding. Garbage there must not
        // change the results (the engine masks it).
        let dir = try Self.validModel()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let before = try BinaryMoEModel.load(directory: dir)
        let x = try TestSupport.npy(dir, "inputs").bytes()
        let expected = try before.predict(samples: x, count: Self.spec.samples).logits
        let (header, data) = Self.split(Self.weights(dir))
        let re = try NSRegularExpression(pattern: #""stem.weight":\{"dtype":"U8","shape":\[9,3\],"data_offsets":\[(\d+),"#)
        let m = try #require(re.firstMatch(in: header, range: NSRange(header.startIndex..., in: header)))
        let begin = Int((header as NSString).substring(with: m.range(at: 1)))!
        var d = data
        for r in 0..<9 { d[begin + r * 3 + 2] |= 0xF0 }
        Self.write(dir, Self.join(header, d))
        let after = try BinaryMoEModel.load(directory: dir)
        #expect(try after.predict(samples: x, count: Self.spec.samples).logits == expected)
    }

    /// Random byte flips and truncations of a valid file: loading must throw a ModelError or succeed (and then
    /// predict must run), never crash.
    @Test func mutationFuzz() throws {
        let dir = try Self.validModel()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let original = Self.weights(dir)
        let (header, _) = Self.split(original)
        let headerEnd = 8 + header.utf8.count
        let x = try TestSupport.npy(dir, "inputs").bytes()
        var rng = SplitMix64(state: 0xB17F_1EE7)
        var loaded = 0, rejected = 0
        for round in 0..<400 {
            var bytes = original
            switch round % 4 {
            case 0:  // truncate anywhere
                bytes = Array(bytes[0..<Int.random(in: 0..<bytes.count, using: &rng)])
            case 1:  // flip bytes in the header
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    bytes[Int.random(in: 0..<headerEnd, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                }
            case 2:  // set a header byte to a JSON-significant character
                let chars = Array("{}[],:\"0123456789-eE. ".utf8)
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    bytes[Int.random(in: 8..<headerEnd, using: &rng)] = chars.randomElement(using: &rng)!
                }
            default:  // flip anything, including the data
                for _ in 0..<Int.random(in: 1...16, using: &rng) {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                }
            }
            Self.write(dir, bytes)
            do {
                let m = try BinaryMoEModel.load(directory: dir)
                _ = try m.predict(samples: x, count: Self.spec.samples, threads: 2)
                loaded += 1
            } catch is ModelError {
                rejected += 1
            }
        }
        #expect(loaded + rejected == 400)
        #expect(rejected > 100)
    }

    @Test func safetensorsEdgeCases() throws {
        let dir = TestSupport.tempDir("st")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func parse(_ header: String, _ data: [UInt8]) throws -> SafeTensorsFile {
            _ = FileManager.default.createFile(atPath: dir + "/x.safetensors", contents: Data(Self.join(header, data)))
            return try SafeTensorsFile(file: MappedFile(path: dir + "/x.safetensors"))
        }
        let ok = try parse(#"{"a":{"dtype":"U8","shape":[2,2],"data_offsets":[0,4]},"b":{"dtype":"I32","shape":[],"data_offsets":[4,8]},"z":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}"#, [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(ok.tensors["a"]?.shape == [2, 2] && ok.tensors["b"]?.shape == [] && ok.tensors["z"]?.byteCount == 0)
        #expect(throws: ModelError.self) { try parse(#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#, [UInt8](repeating: 0, count: 8)) }
        #expect(throws: ModelError.self) { try parse(#"{"a":{"dtype":"U8","shape":[4611686018427387904,4],"data_offsets":[0,0]}}"#, []) }
        #expect(throws: ModelError.self) { try parse(#"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}"#, []) }
        #expect(throws: ModelError.self) { try parse(#"{"__metadata__":{"format":3}}"#, []) }
        #expect(throws: ModelError.self) { try parse(String(repeating: "[", count: 10000), []) }
        func message(_ header: String, _ data: [UInt8]) -> String {
            do { _ = try parse(header, data); return "" } catch { return "\(error)" }
        }
        #expect(message(#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}"#,
                        [UInt8](repeating: 0, count: 8)).contains("2 bytes before tensor \"b\" belong to no tensor"))
        #expect(message(#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#, [UInt8](repeating: 0, count: 9))
                    .contains("5 bytes after the last tensor"))
        #expect(message(#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
                        [UInt8](repeating: 0, count: 8)).contains("overlap"))
        let meta = try parse(#"{"__metadata__":{"format":"bitfleet.bmoe"}}"#, [])
        #expect(meta.metadata["format"] == "bitfleet.bmoe")
    }
}
