using System.Globalization;

namespace ProxyPlanes.Sandboxed;

/// <summary>
/// Waits sized for this machine, stretched where the machine is known to be slower: the VM lane
/// (qemu TCG) exports <c>PROXYPLANES_TIME_SCALE</c> (4 by default), because a .NET process there
/// starts 30-50x slower than on the host. A wait that is still too short then fails with its own
/// name, rather than every case sharing one outer timeout.
/// </summary>
public static class TimeBudget
{
    public const string ScaleVariable = "PROXYPLANES_TIME_SCALE";

    /// <summary>The factor from <see cref="ScaleVariable"/>: a positive number, else 1.</summary>
    public static double Scale { get; } = Parse(Environment.GetEnvironmentVariable(ScaleVariable));

    /// <summary>The budget here for a wait that takes <paramref name="onTheHost"/> on the host.</summary>
    public static TimeSpan For(TimeSpan onTheHost) => onTheHost * Scale;

    /// <summary>A scale from its text: a number in (0, 1000), else 1.</summary>
    public static double Parse(string? value) =>
        double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var scale) && scale is > 0 and < 1000 ? scale : 1;
}
