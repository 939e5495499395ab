import BitFleetEngine
import BitFleetFetch
import Foundation

/// The JSON written to `bitfleet.results.output`:
/// `{"model":"fashion","version":"1","predictions":[{"sample":0,"custom_id":"a","top":[{"class":9,"label":"Ankle boot","p":0.97}]}]}`
struct ResultDocument: Encodable {
    struct Top: Encodable {
        var `class`: Int
        var label: String
        var p: Float
    }

    struct Prediction: Encodable {
        var sample: Int
        var custom_id: String?
        var top: [Top]
    }

    var model: String
    var version: String
    var predictions: [Prediction]

    init(model: RegisteredModel, input: InputBatch, result: InferenceResult) {
        self.model = model.name
        self.version = model.version
        self.predictions = result.predictions.enumerated().map { index, scores in
            Prediction(sample: index, custom_id: input.customIDs?[index],
                       top: scores.map { Top(class: $0.index, label: $0.label, p: $0.probability) })
        }
    }

    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
