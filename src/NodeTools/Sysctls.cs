using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace ProxyPlanes.NodeTools;

/// <summary>
/// The one writer of the node's sysctls (files under <c>/proc/sys</c>, or any other kernel parameter
/// file), used for kube-proxy's conntrack settings, the sysctls IPVS needs and <c>ipvs.strictARP</c>.
/// A value is written only when it differs (so a read-only <c>/proc/sys</c> that already holds it is
/// fine). <c>/proc/sys/net</c> belongs to the network namespace of the thread that opens it, so a
/// caller that runs this on a thread inside a namespace writes that namespace's values.
/// </summary>
/// <param name="procSys">The root names are relative to (a test passes a folder of its own).</param>
public sealed class Sysctls(ILogger? logger = null, string procSys = "/proc/sys")
{
    private readonly ILogger _logger = logger ?? NullLogger.Instance;

    /// <summary>The file of <paramref name="name"/> (<c>net/ipv4/ip_forward</c>); an absolute path is kept.</summary>
    public string FileOf(string name) => Path.IsPathRooted(name) ? name : Path.Combine(procSys, name);

    /// <summary>The value, or null when it cannot be read or is not a whole number.</summary>
    public long? Read(string name)
    {
        try
        {
            return long.TryParse(File.ReadAllText(FileOf(name)).Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) ? value : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Sets <paramref name="name"/> to <paramref name="value"/> unless it has it; null, or why it could not be written.</summary>
    public string? TrySet(string name, long value)
    {
        try
        {
            if (Read(name) == value) return null;
            File.WriteAllText(FileOf(name), value.ToString(CultureInfo.InvariantCulture));
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return e.Message;
        }
    }

    /// <summary>
    /// Sets a sysctl a setting asks for: logs the change, or one warning naming the setting, the sysctl
    /// and why (the node's value then stays, and <paramref name="setting"/> is added to <paramref name="failed"/>).
    /// </summary>
    public bool Set(string setting, string name, long value, ICollection<string> failed)
    {
        ArgumentNullException.ThrowIfNull(failed);
        var before = Read(name);
        if (before == value) return true;
        if (TrySet(name, value) is { } reason)
        {
            failed.Add(setting);
            _logger.LogWarning("{Setting}: cannot set {Sysctl} to {Value} ({Reason}); the node's value stays", setting, DisplayName(name), value, reason);
            return false;
        }
        _logger.LogInformation("{Setting}: set {Sysctl} to {Value} (was {Before})", setting, DisplayName(name), value, before?.ToString(CultureInfo.InvariantCulture) ?? "unreadable");
        return true;
    }

    /// <summary>As <see cref="Set"/>, but a value already at least <paramref name="value"/> is left alone (never lowered).</summary>
    public bool Raise(string setting, string name, long value, ICollection<string> failed)
    {
        if (Read(name) is { } current && current >= value)
        {
            _logger.LogDebug("{Setting}: {Sysctl} is {Current}, at least the {Value} asked for", setting, DisplayName(name), current, value);
            return true;
        }
        return Set(setting, name, value, failed);
    }

    /// <summary><c>net.ipv4.ip_forward</c> for a file under the root; the path otherwise.</summary>
    public string DisplayName(string name)
    {
        var file = FileOf(name);
        return file.StartsWith(procSys + "/", StringComparison.Ordinal) ? file[(procSys.Length + 1)..].Replace('/', '.') : file;
    }
}
