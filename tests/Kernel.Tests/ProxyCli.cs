using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>Runs the real proxyplanes binary to its end, for tests of its command line (flags, --config).</summary>
internal static class ProxyCli
{
    /// <summary>
    /// Runs proxyplanes (or <paramref name="binary"/>, e.g. the lab) in a namespace of its own, so even
    /// a failing start never touches the host's network.
    /// </summary>
    public static async Task<ExecResult> RunInNamespaceAsync(string[] args, string binary = ProxyProcess.Daemon)
    {
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-cli");
        var (file, prefix) = ProxyProcess.Executable(binary);
        return await ns.ExecAsync([file, .. prefix, .. args], TimeSpan.FromSeconds(60));
    }
}
