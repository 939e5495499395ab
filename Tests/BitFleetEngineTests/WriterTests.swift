import Foundation
import Testing
@testable import BitFleetEngine

@Suite("Model writer")
struct WriterTests {
    /// A model written by Swift's ModelWriter loads in the Python reference (via the safetensors library) and both
    /// agree; whole-word rows are used straight from the mapping (no private copy).
    @Test(arguments: [false, true])
    func roundTripThroughPythonReference(oddWidths: Bool) throws {
        let dir = TestSupport.tempDir("writer")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = ModelConfig(
            name: "writer \"test\"", version: "2b", inputFeatures: oddWidths ? 37 : 128, inputShape: nil, inputBitPlanes: 6,
            inputScale: 255, stemWidth: oddWidths ? 70 : 128, experts: 9, topK: 3, expertHidden: oddWidths ? [33] : [64],
            classes: ["a", "b\n", "ç"])
        try ModelWriter.writeRandom(directory: dir, config: config, seed: 99)
        let model = try BinaryMoEModel.load(directory: dir)
        #expect(model.config == config)
        if oddWidths { #expect(model.repackedBytes > 0) } else { #expect(model.repackedBytes == 0) }
        let count = 31
        var rng = SplitMix64(state: 5)
        let x = (0..<(count * config.inputFeatures)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        FileManager.default.createFile(atPath: dir + "/inputs.raw", contents: Data(x))
        try TestSupport.run(["python3", "-c", """
            import sys, numpy as np
            sys.path.insert(0, sys.argv[1] + '/Ops/models')
            import reference
            d = sys.argv[2]
            x = np.fromfile(d + '/inputs.raw', dtype=np.uint8).reshape(\(count), \(config.inputFeatures))
            out = reference.forward(reference.load_model(d), x)
            for k, v in out.items(): np.save(d + '/expected_' + k + '.npy', v)
            """, TestSupport.repoRoot(), dir])
        let t = try model.trace(samples: x, count: count)
        #expect(t.stemPreActivations == (try TestSupport.npy(dir, "expected_stem_pre").ints()))
        #expect(t.experts == (try TestSupport.npy(dir, "expected_experts").ints()))
        let logits = try TestSupport.npy(dir, "expected_logits").floats()
        #expect(zip(t.logits, logits).allSatisfy { TestSupport.close($0, $1) })
    }
}
