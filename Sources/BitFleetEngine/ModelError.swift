/// A model could not be loaded or used. The message names the file, tensor or field at fault.
public struct ModelError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        case io, config, format, tensor, checksum, input
    }
    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
