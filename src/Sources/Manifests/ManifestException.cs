using System.Globalization;

namespace ProxyPlanes.Sources.Manifests;

/// <summary>
/// A manifest that cannot be used: bad YAML/JSON, a field of the wrong type, a missing name, a duplicate...
/// The message always starts with the place: <c>file:line:col: message</c> for syntax errors and
/// <c>file:line: Kind ns/name: what</c> for the rest (<c>file: message</c> when no line applies).
/// </summary>
public sealed class ManifestException : Exception
{
    public ManifestException(string file, int line, int? column, string detail, string? subject = null, Exception? innerException = null)
        : base(Format(file, line, column, subject, detail), innerException)
    {
        File = file;
        Line = line;
        Column = column;
        Subject = subject;
        Detail = detail;
    }

    /// <summary>The file (or the name given to <see cref="ManifestParser.Parse"/>), or the manifest path.</summary>
    public string File { get; }

    /// <summary>1-based line; 0 when the error concerns a whole file or path.</summary>
    public int Line { get; }

    /// <summary>1-based column, when known (syntax errors).</summary>
    public int? Column { get; }

    /// <summary>The object concerned, such as <c>Service default/web</c>, when known.</summary>
    public string? Subject { get; }

    /// <summary>The message without the place and subject.</summary>
    public string Detail { get; }

    private static string Format(string file, int line, int? column, string? subject, string detail)
    {
        var place = line <= 0
            ? file
            : column is { } c
                ? string.Create(CultureInfo.InvariantCulture, $"{file}:{line}:{c}")
                : string.Create(CultureInfo.InvariantCulture, $"{file}:{line}");
        return subject is null ? $"{place}: {detail}" : $"{place}: {subject}: {detail}";
    }
}
