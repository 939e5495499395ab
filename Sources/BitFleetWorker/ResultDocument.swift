import BitFleetEngine
import BitFleetFetch
import Synchronization

/// Bounds on one job's result that are not fetch settings. The CLI sets `maxResultBytes` once at start from
/// `--max-result-bytes` / `BITFLEET_MAX_RESULT_BYTES`; every slot of the process uses it.
public enum ResultLimits {
    /// 64 MiB: about 250 000 samples with three classes each.
    public static let defaultMaxResultBytes = 64 << 20
    private static let storage = Atomic<Int>(defaultMaxResultBytes)

    /// Largest result document (`bitfleet.results.output`, JSON text) a job may produce; a job whose result
    /// would be larger fails permanently (phase `result`) before the document is built.
    public static var maxResultBytes: Int {
        get { storage.load(ordering: .relaxed) }
        set { storage.store(max(1024, newValue), ordering: .relaxed) }
    }
}

/// The JSON written to `bitfleet.results.output`:
/// `{"model":"fashion","predictions":[{"custom_id":"a","sample":0,"top":[{"class":9,"label":"Ankle boot","p":0.97}]}],"version":"1"}`
/// (keys sorted; `custom_id` only where the input named one). It is written straight into one byte buffer,
/// never larger than `maxBytes`: a result that would not fit is refused with the size it needs, before anything
/// big is allocated when even its smallest possible encoding is over the limit.
struct ResultDocument {
    var model: String
    var version: String
    var input: InputBatch
    /// The ranked classes of a pass that may have served other jobs too, and this input's samples in it.
    var ranked: RankedClasses
    var samples: Range<Int>
    var maxBytes: Int

    init(model: RegisteredModel, input: InputBatch, ranked: RankedClasses, samples: Range<Int>,
         maxBytes: Int = ResultLimits.maxResultBytes) {
        self.model = model.name
        self.version = model.version
        self.input = input
        self.ranked = ranked
        self.samples = samples
        self.maxBytes = maxBytes
    }

    /// The fewest bytes the document can take: every prediction and class entry with one-digit numbers and
    /// empty labels. Over the limit means the result cannot fit, whatever the labels are.
    var minimumBytes: Int {
        let classes = samples.count * ranked.perSample
        // {"sample":0,"top":[]},  and  {"class":0,"label":"","p":0},
        return 40 + model.utf8.count + version.utf8.count + samples.count * 22 + classes * 29
    }

    func tooLarge(_ bytes: Int, exact: Bool) -> JobFailure {
        let size = exact ? "exceeds" : "needs at least \(bytes) bytes, over"
        return JobFailure(.permanent, phase: "result",
                          "the result document \(size) the limit of \(maxBytes) bytes (--max-result-bytes) for "
                          + "\(samples.count) samples × \(ranked.perSample) classes each; split the input into smaller "
                          + "jobs or lower top_k")
    }

    func json() throws(JobFailure) -> String {
        let minimum = minimumBytes
        if minimum > maxBytes { throw tooLarge(minimum, exact: false) }
        var out: [UInt8] = []
        out.reserveCapacity(min(maxBytes, minimum * 2))
        // Appended piece by piece into the one buffer (no temporary arrays or interpolated strings per entry); each
        // class label is escaped once per document, when first used.
        var labels = [[UInt8]?](repeating: nil, count: ranked.labels.count)
        out.append(contentsOf: "{\"model\":".utf8)
        Self.string(model, into: &out)
        out.append(contentsOf: ",\"predictions\":[".utf8)
        let customIDs = input.customIDs
        for (index, sample) in samples.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "{"))
            if let id = customIDs?[index] {
                out.append(contentsOf: "\"custom_id\":".utf8)
                Self.string(id, into: &out)
                out.append(UInt8(ascii: ","))
            }
            out.append(contentsOf: "\"sample\":".utf8)
            Self.integer(index, into: &out)
            out.append(contentsOf: ",\"top\":[".utf8)
            for rank in 0..<ranked.perSample {
                let c = ranked.index(sample, rank)
                if rank > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: "{\"class\":".utf8)
                Self.integer(c, into: &out)
                out.append(contentsOf: ",\"label\":".utf8)
                if let escaped = labels[c] {
                    out.append(contentsOf: escaped)
                } else {
                    var escaped: [UInt8] = []
                    Self.string(ranked.labels[c], into: &escaped)
                    out.append(contentsOf: escaped)
                    labels[c] = escaped
                }
                out.append(contentsOf: ",\"p\":".utf8)
                Self.number(ranked.probability(sample, rank), into: &out)
                out.append(UInt8(ascii: "}"))
            }
            out.append(contentsOf: "]}".utf8)
            if out.count > maxBytes { throw tooLarge(out.count, exact: true) }
        }
        out.append(contentsOf: "],\"version\":".utf8)
        Self.string(version, into: &out)
        out.append(UInt8(ascii: "}"))
        if out.count > maxBytes { throw tooLarge(out.count, exact: true) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends a decimal integer.
    static func integer(_ value: Int, into out: inout [UInt8]) {
        if value >= 0 && value < 10 {
            out.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        out.append(contentsOf: String(value).utf8)
    }

    /// Appends `number(value)`.
    static func number(_ value: Float, into out: inout [UInt8]) {
        guard value.isFinite else { out.append(UInt8(ascii: "0")); return }
        if value == value.rounded(), abs(value) < 1e9 { integer(Int(value), into: &out); return }
        out.append(contentsOf: value.description.utf8)
    }

    /// A JSON number for a probability (shortest form that reads back the same Float; never NaN or ±inf).
    static func number(_ value: Float) -> String {
        var out: [UInt8] = []
        number(value, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `text` as a JSON string: quotes, backslashes and control characters escaped, '/' and non-ASCII as is.
    static func string(_ text: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        // Most text needs no escaping: one append.
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            out.append(contentsOf: text.utf8)
            out.append(UInt8(ascii: "\""))
            return
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
