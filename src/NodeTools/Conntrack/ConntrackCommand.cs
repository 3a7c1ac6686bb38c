using System.Globalization;
using System.Text.RegularExpressions;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.NodeTools.Conntrack;

/// <summary>
/// Applies deletions with the <c>conntrack</c> tool (conntrack-tools):
/// <c>conntrack -D [-f ipv6] -p udp|sctp [--orig-dst IP] --orig-port-dst PORT [--reply-src EP --reply-port-src EPPORT]</c>.
/// </summary>
/// <remarks>
/// One process per deletion, run one after the other. That is simple and enough for the handful of deletions a sync
/// usually leaves; conntrack-tools has no batch mode for filtered deletes, so doing better means talking netlink
/// (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE) directly — later, if endpoint churn makes this a bottleneck.
/// "0 flow entries have been deleted" (exit code 1) is success; the count in "N flow entries have been deleted"
/// (stderr, exit code 0) is what <see cref="DeleteAsync"/> returns, summed. Every deletion is tried; failures are reported
/// together at the end as <see cref="CommandException"/> (one failure) or <see cref="AggregateException"/> of them.
/// </remarks>
public sealed partial class ConntrackCommand : IConntrack
{
    /// <summary>What conntrack 1.4.x prints (on stderr, exit code 1) when a delete matched nothing.</summary>
    internal const string NothingDeleted = "0 flow entries have been deleted";

    private readonly string _file;
    private readonly IReadOnlyList<string> _leadingArguments;
    private readonly TimeSpan _timeout;

    /// <param name="conntrackPath">The conntrack binary (looked up on PATH by default).</param>
    /// <param name="commandPrefix">
    /// Test-only: a command the conntrack invocation is wrapped in, e.g. <c>["ip", "netns", "exec", NAME]</c> so that
    /// a kernel test deletes in a sandbox namespace instead of the caller's. Null or empty in production.
    /// </param>
    /// <param name="timeout">Limit per conntrack process (default 10 s); a process still running then is killed.</param>
    public ConntrackCommand(string conntrackPath = "conntrack", IReadOnlyList<string>? commandPrefix = null, TimeSpan? timeout = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(conntrackPath);
        var command = (commandPrefix ?? []).Append(conntrackPath).ToArray();
        _file = command[0];
        _leadingArguments = command[1..];
        _timeout = timeout ?? TimeSpan.FromSeconds(10);
    }

    public async Task<long> DeleteAsync(IReadOnlyList<ConntrackDeletion> deletions, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(deletions);
        var failures = new List<Exception>();
        long deleted = 0;
        foreach (var deletion in deletions)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var arguments = _leadingArguments.Concat(Arguments(deletion)).ToList();
            try
            {
                var result = await ExternalCommand.RunAsync(_file, arguments, standardInput: null, _timeout, cancellationToken).ConfigureAwait(false);
                if (result.Succeeded) deleted += DeletedCount(result.StandardError);
                else if (!IsNothingDeleted(result))
                {
                    failures.Add(new CommandException(
                        $"{ExternalCommand.Format(_file, arguments)} exited with {result.ExitCode}: {ExternalCommand.FirstLines(result.StandardError, 5)}",
                        result));
                }
            }
            catch (TimeoutException e)
            {
                failures.Add(new CommandException(e.Message, inner: e));
            }
            catch (CommandException e)
            {
                // Could not be started (not installed?): the others will not start either.
                failures.Add(new CommandException($"{ExternalCommand.Format(_file, arguments)}: {e.Message}", e.Result, e));
                break;
            }
        }
        if (failures.Count == 1) throw failures[0];
        if (failures.Count > 1)
            throw new AggregateException($"{failures.Count} of {deletions.Count} conntrack deletions failed", failures);
        return deleted;
    }

    /// <summary>The N of "N flow entries have been deleted" in conntrack's output; 0 when absent.</summary>
    public static long DeletedCount(string output)
    {
        var match = DeletedPattern().Match(output);
        return match.Success && long.TryParse(match.Groups[1].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : 0;
    }

    [GeneratedRegex(@"(\d+) flow entries have been deleted")]
    private static partial Regex DeletedPattern();

    /// <summary>The conntrack arguments (after the program name) for one deletion.</summary>
    public static IReadOnlyList<string> Arguments(ConntrackDeletion deletion)
    {
        ArgumentNullException.ThrowIfNull(deletion);
        CheckFamily(deletion, deletion.OriginalDestination);
        CheckFamily(deletion, deletion.ReplySource);
        var args = new List<string> { "-D" };
        if (deletion.Family == IpFamily.IPv6) args.AddRange(["-f", "ipv6"]);
        args.AddRange(["-p", deletion.Protocol.ToString().ToLowerInvariant()]);
        if (deletion.OriginalDestination is { } destination) args.AddRange(["--orig-dst", destination.ToString()]);
        args.AddRange(["--orig-port-dst", deletion.OriginalDestinationPort.ToString(CultureInfo.InvariantCulture)]);
        if (deletion.ReplySource is { } source)
        {
            args.AddRange(["--reply-src", source.ToString()]);
            args.AddRange(["--reply-port-src", deletion.ReplySourcePort.ToString(CultureInfo.InvariantCulture)]);
        }
        return args;
    }

    internal static bool IsNothingDeleted(CommandResult result) =>
        result.ExitCode == 1 && result.StandardError.Contains(NothingDeleted, StringComparison.Ordinal);

    private static void CheckFamily(ConntrackDeletion deletion, System.Net.IPAddress? address)
    {
        if (address is null) return;
        var family = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? IpFamily.IPv6 : IpFamily.IPv4;
        if (family != deletion.Family)
            throw new ArgumentException($"{address} is not {deletion.Family} in deletion {deletion}", nameof(deletion));
    }
}
