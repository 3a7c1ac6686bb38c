namespace ProxyPlanes.Sandbox;

/// <summary>Outcome of a finished command: exit code and everything it wrote.</summary>
public sealed record ExecResult(int ExitCode, string StandardOutput, string StandardError)
{
    public bool Succeeded => ExitCode == 0;
}
