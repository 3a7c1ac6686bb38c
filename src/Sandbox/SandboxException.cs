namespace ProxyPlanes.Sandbox;

/// <summary>Something in the sandbox (a command, a syscall, a server) failed.</summary>
public class SandboxException : Exception
{
    public SandboxException(string message)
        : base(message)
    {
    }

    public SandboxException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>A command run by the sandbox exited with a non-zero code.</summary>
public sealed class SandboxCommandException : SandboxException
{
    public SandboxCommandException(string command, ExecResult result)
        : base(FormatMessage(command, result))
    {
        Command = command;
        Result = result;
    }

    /// <summary>The command line, for humans (arguments with spaces are quoted).</summary>
    public string Command { get; }

    public ExecResult Result { get; }

    public int ExitCode => Result.ExitCode;

    private static string FormatMessage(string command, ExecResult result)
    {
        var detail = result.StandardError.Trim();
        if (detail.Length == 0)
        {
            detail = result.StandardOutput.Trim();
        }

        return detail.Length == 0
            ? $"Command `{command}` failed with exit code {result.ExitCode}."
            : $"Command `{command}` failed with exit code {result.ExitCode}: {detail}";
    }
}
