import CLibPQ
import Foundation

/// A libpq connection string (URL or `key=value` list), checked before use and never shown with its password.
public enum ConnectionString {
    /// Throws a `.configuration` error (its message free of the password) when libpq cannot parse `text`.
    /// nil or empty (libpq's `PG*` variables) is valid.
    public static func validate(_ text: String?) throws(PostgresError) {
        guard let text, !text.isEmpty else { return }
        var error: UnsafeMutablePointer<CChar>?
        let options = PQconninfoParse(text, &error)
        defer {
            if let options { PQconninfoFree(options) }
            if let error { PQfreemem(error) }
        }
        guard options == nil else { return }
        let reason = error.map { String(cString: $0).trimmingCharacters(in: .whitespacesAndNewlines) } ?? "cannot be parsed"
        throw PostgresError(kind: .configuration,
                            message: "the database URL cannot be parsed: \(redact(reason, in: text)) (URL: \(redact(text, in: text)))")
    }

    /// `message` with every trace of the password that `connection` carries replaced by `***`: the password libpq
    /// parses out of it (as written and percent-decoded), the user-info part of a URL, and `password=` settings.
    public static func redact(_ message: String, in connection: String?) -> String {
        var out = message
        if let connection, !connection.isEmpty {
            for secret in passwords(in: connection) where secret.count >= 1 {
                out = out.replacingOccurrences(of: secret, with: "***")
            }
        }
        // Whatever could not be parsed: a URL's user:password@ and key=value / query password settings.
        out = out.replacingOccurrences(of: #"(postgres(?:ql)?://[^:/@\s"]*:)[^@\s"]*@"#, with: "$1***@",
                                       options: [.regularExpression, .caseInsensitive])
        out = out.replacingOccurrences(of: #"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&"]+)"#, with: "$1***",
                                       options: [.regularExpression, .caseInsensitive])
        return out
    }

    /// The password as libpq parses it, plus its spelling in the text (a URL may percent-encode it).
    static func passwords(in connection: String) -> [String] {
        var found: [String] = []
        var error: UnsafeMutablePointer<CChar>?
        if let options = PQconninfoParse(connection, &error) {
            var option = options
            while let keyword = option.pointee.keyword {
                if String(cString: keyword) == "password", let value = option.pointee.val {
                    let password = String(cString: value)
                    if !password.isEmpty {
                        found.append(password)
                        if let encoded = password.addingPercentEncoding(withAllowedCharacters: .alphanumerics),
                           encoded != password { found.append(encoded) }
                    }
                }
                option += 1
            }
            PQconninfoFree(options)
        }
        if let error { PQfreemem(error) }
        // The raw user-info password of a URL, as written (percent-escapes and all).
        if let match = connection.range(of: #"^postgres(?:ql)?://[^:/@]*:([^@]*)@"#, options: [.regularExpression, .caseInsensitive]) {
            let userInfo = connection[match].dropLast()
            if let colon = userInfo.dropFirst(userInfo.hasPrefix("postgresql://") ? 13 : 11).firstIndex(of: ":") {
                let raw = String(userInfo[userInfo.index(after: colon)...])
                if !raw.isEmpty { found.append(raw) }
            }
        }
        return found.sorted { $0.count > $1.count }
    }
}
