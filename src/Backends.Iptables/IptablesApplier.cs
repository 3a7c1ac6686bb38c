using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Core.Util;

namespace ProxyPlanes.Backends.Iptables;

/// <summary>Which iptables the node uses: the nf_tables-based one or the legacy x_tables one.</summary>
public enum IptablesVariant { Nft, Legacy }

/// <summary>The only part of the iptables data plane that touches the kernel.</summary>
public interface IIptablesApplier
{
    IptablesVariant Variant { get; }

    /// <summary>iptables-save of one table.</summary>
    Task<string> SaveAsync(string table, CancellationToken cancellationToken);

    /// <summary>iptables-restore --noflush of a whole script; each table commits atomically or not at all.</summary>
    Task RestoreAsync(string script, CancellationToken cancellationToken);

    /// <summary>
    /// The rules of one chain as <c>iptables -S CHAIN</c> prints them (its <c>-N</c> line first), or
    /// null when the table has no such chain. Reads that chain only, not the whole table.
    /// </summary>
    Task<string?> ListChainAsync(string table, string chain, CancellationToken cancellationToken);
}

/// <summary>Drives iptables-{nft,legacy}-save / -restore (ip6tables-* for IPv6) found on PATH.</summary>
public sealed class IptablesCommandApplier(IptablesVariant variant, IpFamily family) : IIptablesApplier
{
    public IptablesVariant Variant => variant;

    private string Tool(string suffix) =>
        $"{(family == IpFamily.IPv4 ? "iptables" : "ip6tables")}-{(variant == IptablesVariant.Nft ? "nft" : "legacy")}-{suffix}";

    public async Task<string> SaveAsync(string table, CancellationToken cancellationToken) =>
        (await ExternalCommand.RunCheckedAsync(Tool("save"), ["-t", table], null, cancellationToken).ConfigureAwait(false)).StandardOutput;

    public async Task RestoreAsync(string script, CancellationToken cancellationToken)
    {
        // -w: wait for the xtables lock other tools (kubelet, CNI plugins) may hold.
        var result = await ExternalCommand.RunAsync(Tool("restore"), ["-w", "5", "--noflush"], script, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new CommandException($"{Tool("restore")} exited with {result.ExitCode}: {ExternalCommand.FirstLines(result.StandardError, 5)}", result);
    }

    public async Task<string?> ListChainAsync(string table, string chain, CancellationToken cancellationToken)
    {
        var tool = $"{(family == IpFamily.IPv4 ? "iptables" : "ip6tables")}-{(variant == IptablesVariant.Nft ? "nft" : "legacy")}";
        var result = await ExternalCommand.RunAsync(tool, ["-w", "5", "-t", table, "-S", chain], null, cancellationToken).ConfigureAwait(false);
        if (result.Succeeded) return result.StandardOutput;
        // Exit 1: the chain is gone (legacy says "No chain/target/match by that name", iptables-nft 1.8.9
        // "chain ... is incompatible"). Anything else (2: bad usage, 4: the lock) is a failure to read.
        if (result.ExitCode == 1) return null;
        throw new CommandException($"{tool} -t {table} -S {chain} exited with {result.ExitCode}: {ExternalCommand.FirstLines(result.StandardError, 5)}", result);
    }

    /// <summary>
    /// Picks the variant the node already uses, the way the iptables-wrapper shipped with
    /// kube-proxy does: the kubelet's canary chains name it; otherwise the variant holding more
    /// rules wins; a node with no rules at all gets nft.
    /// </summary>
    public static async Task<IptablesVariant> DetectAsync(IpFamily family, CancellationToken cancellationToken)
    {
        var prefix = family == IpFamily.IPv4 ? "iptables" : "ip6tables";
        var nft = await TrySaveAllAsync($"{prefix}-nft-save", cancellationToken).ConfigureAwait(false);
        var legacy = await TrySaveAllAsync($"{prefix}-legacy-save", cancellationToken).ConfigureAwait(false);
        if (nft is null && legacy is null)
            throw new CommandException($"neither {prefix}-nft-save nor {prefix}-legacy-save could be run: install the iptables package");
        if (nft is null) return IptablesVariant.Legacy;
        if (legacy is null) return IptablesVariant.Nft;
        static bool HasKubeletCanary(string save) => save.Contains("KUBE-IPTABLES-HINT", StringComparison.Ordinal) || save.Contains("KUBE-KUBELET-CANARY", StringComparison.Ordinal);
        if (HasKubeletCanary(nft)) return IptablesVariant.Nft;
        if (HasKubeletCanary(legacy)) return IptablesVariant.Legacy;
        return CountRules(legacy) > CountRules(nft) ? IptablesVariant.Legacy : IptablesVariant.Nft;
    }

    /// <summary>Whether this node's kernel and tools can program <paramref name="family"/> (ip6tables may be missing or disabled).</summary>
    public static async Task<bool> IsAvailableAsync(IpFamily family, IptablesVariant variant, CancellationToken cancellationToken)
    {
        var tool = $"{(family == IpFamily.IPv4 ? "iptables" : "ip6tables")}-{(variant == IptablesVariant.Nft ? "nft" : "legacy")}-save";
        return await TrySaveAllAsync(tool, cancellationToken, ["-t", "nat"]).ConfigureAwait(false) is not null;
    }

    private static int CountRules(string save) => save.Split('\n').Count(l => l.StartsWith("-A ", StringComparison.Ordinal));

    private static async Task<string?> TrySaveAllAsync(string tool, CancellationToken cancellationToken, string[]? arguments = null)
    {
        try
        {
            var result = await ExternalCommand.RunAsync(tool, arguments ?? [], null, cancellationToken).ConfigureAwait(false);
            return result.Succeeded ? result.StandardOutput : null;
        }
        catch (CommandException)
        {
            return null;
        }
    }
}
