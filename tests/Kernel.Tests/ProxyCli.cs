using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>Runs the real proxyplanes binary to its end, for tests of its command line (flags, --config).</summary>
internal static class ProxyCli
{
    /// <summary>Runs proxyplanes in a namespace of its own, so even a failing start never touches the host's network.</summary>
    public static async Task<ExecResult> RunInNamespaceAsync(string[] args)
    {
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-cli");
        var (file, prefix) = ProxyProcess.Executable();
        return await ns.ExecAsync([file, .. prefix, .. args], TimeSpan.FromSeconds(60));
    }
}
