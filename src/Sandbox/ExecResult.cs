using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Sandbox;

/// <summary>Outcome of a finished command: exit code and everything it wrote (the sandbox's view of a <see cref="CommandResult"/>).</summary>
public sealed record ExecResult(int ExitCode, string StandardOutput, string StandardError)
{
    public bool Succeeded => ExitCode == 0;

    internal static ExecResult From(CommandResult result) => new(result.ExitCode, result.StandardOutput, result.StandardError);
}
