namespace ProxyPlanes.TestKit;

/// <summary>Where a system tool is installed, looked up in the system folders only (not PATH), so a test's wrapper of the same name first on the daemon's PATH can run the real one.</summary>
public static class InstalledTool
{
    public static string PathOf(string name) =>
        new[] { "/usr/sbin", "/sbin", "/usr/bin", "/bin" }.Select(d => System.IO.Path.Combine(d, name)).FirstOrDefault(File.Exists)
        ?? throw new FileNotFoundException($"{name} is not installed");
}
