#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only, shared memory mapping of a whole file (`mmap(PROT_READ, MAP_SHARED)`): every process that maps
/// the same model shares one copy in the page cache.
final class MappedFile: @unchecked Sendable {
    let path: String
    let base: UnsafeRawPointer
    let count: Int

    init(path: String) throws(ModelError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            throw ModelError(.io, "\(path): cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 {
            throw ModelError(.io, "\(path): cannot stat: \(String(cString: strerror(errno)))")
        }
        if (st.st_mode & S_IFMT) != S_IFREG {
            throw ModelError(.io, "\(path): not a regular file")
        }
        let size = Int(st.st_size)
        if size < 8 {
            throw ModelError(.format, "\(path): truncated: the file has \(size) bytes, a safetensors file needs at least 8 (the header length)")
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw ModelError(.io, "\(path): cannot mmap \(size) bytes: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
        count = size
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), count)
    }
}

/// Reads a small whole file (config.json) into memory.
func readSmallFile(_ path: String, limit: Int = 16 << 20) throws(ModelError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw ModelError(.io, "\(path): cannot open: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw ModelError(.io, "\(path): read error: \(String(cString: strerror(errno)))")
        }
        if n == 0 { break }
        out.append(contentsOf: chunk[0..<n])
        if out.count > limit { throw ModelError(.io, "\(path): larger than \(limit) bytes") }
    }
    return out
}
