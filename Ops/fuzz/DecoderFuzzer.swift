// libFuzzer entry point for the input decoders (compiled by Ops/fuzz/run.sh with -sanitize=fuzzer,address
// together with the decoder sources of BitFleetFetch). The first byte picks the declared format and the model
// width, the rest is the body: any input must decode or throw a DecodeError, never crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDecoders(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let selector = data[0]
    let body = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let formats: [String?] = [nil, "npy", "json", "ndjson", "raw:uint8", "raw:float32", "raw:uint8:2x4", "raw:float32:1x4"]
    let format = formats[Int(selector & 7)]
    let features = [4, 1, 784, 3][Int((selector >> 3) & 3)]
    _ = try? InputDecoder.decode(body, format: format, contentType: nil, url: "fuzz", features: features, maxSamples: 4096)
    if selector & 0x20 != 0 { _ = try? Gzip.decompress(body, limit: 1 << 20) }
    return 0
}
