import Foundation
import Testing
@testable import BitFleetEngine

/// The trained model in Ops/models/fashion (when present) on real Fashion-MNIST test images: the engine agrees with
/// the reference.py command line, and its accuracy is what a trained model should reach.
@Suite("Trained fashion model")
struct FashionModelTests {
    static let modelDir = TestSupport.repoRoot() + "/Ops/models/fashion"
    static let images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    static let available = FileManager.default.fileExists(atPath: modelDir + "/model.safetensors")
        && FileManager.default.fileExists(atPath: images)

    @Test  // the model is committed and Ops/setup.sh installs the data set: fails, never skips, without them
    func matchesReferenceCLIOnTestImages() throws {
        try #require(Self.available, "needs Ops/models/fashion and the Fashion-MNIST test set (dataset-fashion-mnist)")
        let dir = TestSupport.tempDir("fashion")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let count = 500
        try TestSupport.run(["python3", "-c", """
            import gzip, sys, numpy as np
            d = sys.argv[1]
            with gzip.open('\(Self.images)') as f: x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
            with gzip.open('\(Self.images.replacingOccurrences(of: "images-idx3", with: "labels-idx1"))') as f:
                y = np.frombuffer(f.read(), np.uint8, offset=8)
            np.save(d + '/inputs.npy', x[:\(count)]); np.save(d + '/expected_labels.npy', y[:\(count)])
            """, dir])
        let root = TestSupport.repoRoot()
        try TestSupport.run(["python3", root + "/Ops/models/reference.py", Self.modelDir, dir + "/inputs.npy", dir + "/out.npz"])
        try TestSupport.run(["python3", "-c", "import numpy as np, sys; d = np.load(sys.argv[1] + '/out.npz')\n"
                             + "for k in d.files: np.save(sys.argv[1] + '/expected_' + k + '.npy', d[k])", dir])
        let model = try BinaryMoEModel.load(directory: Self.modelDir)
        let x = try TestSupport.npy(dir, "inputs").bytes()
        let t = try model.trace(samples: x, count: count, threads: 2)
        #expect(t.stemPreActivations == (try TestSupport.npy(dir, "expected_stem_pre").ints()))
        #expect(t.experts == (try TestSupport.npy(dir, "expected_experts").ints()))
        let logits = try TestSupport.npy(dir, "expected_logits").floats()
        #expect(zip(t.logits, logits).allSatisfy { TestSupport.close($0, $1) })
        let labels = try TestSupport.npy(dir, "expected_labels").ints()
        let result = try model.predict(samples: x, count: count, topClasses: 1)
        let correct = zip(result.predictions, labels).filter { $0.0.first?.index == $0.1 }.count
        #expect(Double(correct) / Double(count) > 0.75, "accuracy \(correct)/\(count)")
    }
}
