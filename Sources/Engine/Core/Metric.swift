/// Similarity measure of a vector search. Smaller "distance" is always better:
/// L2 is the squared Euclidean distance, inner product is reported negated, cosine is the
/// inner product of L2-normalised vectors (also negated).
public enum Metric: String, Sendable, CaseIterable {
    case l2
    case innerProduct = "ip"
    case cosine = "cos"
}
