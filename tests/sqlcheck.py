"""What the service's SQL says, read from PostgreSQL's own parse tree (pglast) rather than from its text.

`tenant_scoping_faults` lists every reference to a tenant table that a statement leaves open to other
tenants. A reference is scoped when its rows are pinned to tenant $1: by a conjunct `x.tenant_id = $1` where
it is read, or by `x.tenant_id = y.tenant_id` with a relation y that is itself scoped (in the same FROM list,
an enclosing query, or a CTE / sub-select whose tenant_id column only ever holds $1). An INSERT into a tenant
table must take tenant_id from $1 or from a scoped relation; an UPDATE may set tenant_id only to $1. Only
top-level AND conjuncts count (an OR or NOT weakens a filter), and an outer join's ON condition constrains its
nullable side alone. Whatever the checker cannot follow counts as a fault, so a new construction is looked
at, not waved through.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, AlterTableType, BoolExprType, JoinType, OnConflictAction, SetOperation
from pglast.stream import RawStream

TENANT = "tenant_id"
PARAM = "$1"  # the tenant, as the value side of an equality


def parse_one(sql: str) -> ast.Node:
    (raw,) = parse_sql(sql)
    return raw.stmt


def walk(node: Any) -> Iterator[ast.Node]:
    """Every node under `node` (itself included), depth first."""
    if isinstance(node, ast.Node):
        yield node
        for attr in node:
            yield from walk(getattr(node, attr))
    elif isinstance(node, list | tuple):
        for child in node:
            yield from walk(child)


def sql_of(node: ast.Node) -> str:
    """The node printed back as canonical SQL, e.g. `(created_at, id) < ($2, $3)`."""
    return str(RawStream()(node))


def conjuncts(expr: ast.Node | None) -> list[ast.Node]:
    """The top-level AND terms of a condition."""
    if expr is None:
        return []
    if isinstance(expr, ast.BoolExpr) and expr.boolop == BoolExprType.AND_EXPR:
        return [term for arg in expr.args for term in conjuncts(arg)]
    return [expr]


def names(nodes: Iterable[ast.Node] | None) -> list[str]:
    return [n.sval for n in nodes or () if isinstance(n, ast.String)]


def tables_with_tenant_column(sql: str) -> set[str]:
    """The tables that the DDL `sql` creates with, or later gives, a tenant_id column."""
    tables = set()
    for node in walk([raw.stmt for raw in parse_sql(sql)]):
        if isinstance(node, ast.CreateStmt):
            columns = [e.colname for e in node.tableElts or () if isinstance(e, ast.ColumnDef)]
            if TENANT in columns:
                tables.add(node.relation.relname)
        elif isinstance(node, ast.AlterTableStmt):
            for cmd in node.cmds or ():
                if cmd.subtype == AlterTableType.AT_AddColumn and cmd.def_.colname == TENANT:
                    tables.add(node.relation.relname)
    return tables


def relation_names(sql: str) -> set[str]:
    """Every relation name `sql` mentions: tables, CTEs and locking targets alike."""
    return {n.relname for raw in parse_sql(sql) for n in walk(raw.stmt) if isinstance(n, ast.RangeVar)}


def keyset_faults(sql: str) -> list[str]:
    """Why `sql` is not a keyset page: newest first, bounded by a LIMIT parameter, no skipping or counting."""
    statement = parse_one(sql)
    if not isinstance(statement, ast.SelectStmt) or statement.op != SetOperation.SETOP_NONE:
        return ["not a single SELECT"]
    faults = []
    if any(isinstance(n, ast.SelectStmt) and n.limitOffset is not None for n in walk(statement)):
        faults.append("skips rows with OFFSET")
    if any(isinstance(n, ast.FuncCall) and names(n.funcname)[-1].lower() == "count" for n in walk(statement)):
        faults.append("counts rows with count(...)")
    order = [sql_of(key) for key in statement.sortClause or ()]
    if order != ["created_at DESC", "id DESC"]:
        faults.append(f"ordered by {order}, not created_at DESC, id DESC")
    if not isinstance(statement.limitCount, ast.ParamRef):
        faults.append("the page size is not a LIMIT parameter")
    return faults


@dataclass
class Shape:
    """The rows a (sub)statement yields, as far as tenancy goes."""

    columns: list[tuple[str | None, bool]] | None  # in order: (name, holds $1 on every row); None behind `*`
    tenant: bool | None  # has a tenant_id column (None: cannot tell)
    pure: bool  # its tenant_id column holds $1 on every row

    def renamed(self, aliases: list[str]) -> Shape:
        """The shape seen through a column alias list, `AS f (a, b)`."""
        if not aliases:
            return self
        if self.columns is None:
            return Shape(None, None, False)
        columns = [(a, pure) for a, (_, pure) in zip(aliases, self.columns, strict=False)]
        columns += self.columns[len(aliases) :]
        return _shape(columns, [(True, pure) for name, pure in columns if name == TENANT])

    def union(self, other: Shape) -> Shape:
        if self.columns is None or other.columns is None:
            return Shape(None, None, False)
        columns = [(a, p and q) for (a, p), (_, q) in zip(self.columns, other.columns, strict=False)]
        return _shape(columns, [(True, pure) for name, pure in columns if name == TENANT])


def _shape(columns: list[tuple[str | None, bool]] | None, tenant: list[tuple[bool | None, bool]]) -> Shape:
    """`tenant`: for each tenant_id column the shape has, (surely there, holds $1 on every row)."""
    has = True if any(h for h, _ in tenant) else (None if tenant else False)
    return Shape(columns, has, bool(tenant) and all(p for _, p in tenant))


@dataclass(eq=False)
class Relation:
    name: str  # the alias, or the table's own name
    table: str | None = None  # a stored table; None for a CTE, a sub-select or a function
    shape: Shape | None = None  # what a CTE, sub-select or function yields


@dataclass(eq=False)
class Scope:
    """One query level: its relations and conditions; or, without relations, the CTEs a WITH adds."""

    outer: Scope | None
    relations: list[Relation] = field(default_factory=list)
    ctes: dict[str, Shape] = field(default_factory=dict)
    # Each condition with the relations it constrains (an outer join's ON: only its nullable side).
    conditions: list[tuple[ast.Node | None, list[Relation]]] = field(default_factory=list)
    same_tenant: list[tuple[Relation, Relation]] = field(default_factory=list)  # JOIN ... USING (tenant_id)
    scoped: set[Relation] = field(default_factory=set)

    def chain(self) -> Iterator[Scope]:
        scope: Scope | None = self
        while scope is not None:
            yield scope
            scope = scope.outer


class TenantCheck:
    def __init__(self, tenant_tables: Collection[str]) -> None:
        self.tenant_tables = frozenset(tenant_tables)
        self.faults: list[str] = []

    def statement(self, node: ast.Node, outer: Scope | None) -> Shape:
        if isinstance(node, ast.SelectStmt):
            return self.select(node, outer)
        if isinstance(node, ast.InsertStmt):
            return self.insert(node, outer)
        if isinstance(node, ast.UpdateStmt | ast.DeleteStmt):
            return self.update_or_delete(node, outer)
        read = {n.relname for n in walk(node) if isinstance(n, ast.RangeVar)}
        for name in sorted(read & self.tenant_tables):
            self.faults.append(f"{type(node).__name__} on {name}: not a statement the check can follow")
        return Shape([], False, False)

    def select(self, node: ast.SelectStmt, outer: Scope | None) -> Shape:
        scope = self.with_clause(node.withClause, outer)
        if node.op != SetOperation.SETOP_NONE:
            shape = self.statement(node.larg, scope).union(self.statement(node.rarg, scope))
            self.sub_selects((node.sortClause, node.limitCount, node.limitOffset), scope)
            return shape
        if node.valuesLists:
            self.sub_selects(node.valuesLists, scope)
            columns = zip(*node.valuesLists, strict=True)
            return Shape([(None, all(self.is_param(v) for v in column)) for column in columns], False, False)
        level = Scope(scope)
        for item in node.fromClause or ():
            level.relations += self.from_item(item, level)
        self.settle(level, node.whereClause)
        clauses = (node.targetList, node.havingClause, node.groupClause, node.sortClause)
        self.sub_selects((*clauses, node.limitCount, node.limitOffset), level)
        return self.shape(node.targetList, level)

    def insert(self, node: ast.InsertStmt, outer: Scope | None) -> Shape:
        scope = self.with_clause(node.withClause, outer)
        table = node.relation.relname
        source = self.statement(node.selectStmt, scope) if node.selectStmt is not None else None
        columns = [target.name for target in node.cols or ()]
        target = target_relation(node.relation)
        level = Scope(scope, [target])
        tenant_rows = table not in self.tenant_tables
        if not tenant_rows and TENANT not in columns:
            self.faults.append(f"INSERT INTO {table} lists no tenant_id column")
        elif not tenant_rows:
            at = columns.index(TENANT)
            values = source.columns if source is not None and source.columns is not None else []
            tenant_rows = at < len(values) and values[at][1]
            if not tenant_rows:
                self.faults.append(f"INSERT INTO {table} takes tenant_id from neither $1 nor a scoped table")
        conflict = node.onConflictClause
        if conflict is not None and conflict.action == OnConflictAction.ONCONFLICT_UPDATE:
            keys = [e.name for e in conflict.infer.indexElems or ()] if conflict.infer is not None else []
            if table in self.tenant_tables and TENANT not in keys:
                self.faults.append(f"INSERT INTO {table} ON CONFLICT DO UPDATE on a key without tenant_id")
                tenant_rows = False
            level.relations.append(excluded := Relation("excluded", table))
            if tenant_rows:
                level.scoped |= {target, excluded}
            self.assignments(conflict.targetList, level)
            self.sub_selects((conflict.targetList, conflict.whereClause), level)
        elif tenant_rows:
            level.scoped.add(target)
        self.sub_selects(returning(node), level)
        return self.shape(returning(node), level)

    def update_or_delete(self, node: ast.UpdateStmt | ast.DeleteStmt, outer: Scope | None) -> Shape:
        level = Scope(self.with_clause(node.withClause, outer))
        level.relations.append(target_relation(node.relation))
        others = node.fromClause if isinstance(node, ast.UpdateStmt) else node.usingClause
        for item in others or ():
            level.relations += self.from_item(item, level)
        self.settle(level, node.whereClause)
        if isinstance(node, ast.UpdateStmt):
            self.assignments(node.targetList, level)
            self.sub_selects(node.targetList, level)
        self.sub_selects(returning(node), level)
        return self.shape(returning(node), level)

    def with_clause(self, clause: ast.WithClause | None, outer: Scope | None) -> Scope | None:
        """A scope holding the CTEs of `clause`, each checked as a statement of its own."""
        if clause is None:
            return outer
        scope = Scope(outer)
        for cte in clause.ctes:
            scope.ctes[cte.ctename] = self.statement(cte.ctequery, scope).renamed(names(cte.aliascolnames))
        return scope

    def from_item(self, node: ast.Node, level: Scope) -> list[Relation]:
        """The relations of one FROM entry; a join's ON condition goes to `level` with what it constrains."""
        if isinstance(node, ast.RangeVar):
            name = node.alias.aliasname if node.alias else node.relname
            cte = None if node.schemaname else self.cte(level, node.relname)
            return [Relation(name, shape=cte) if cte is not None else Relation(name, node.relname)]
        if isinstance(node, ast.RangeSubselect):
            shape = self.statement(node.subquery, level if node.lateral else level.outer)
            if node.alias is None:
                return [Relation("", shape=shape)]
            return [Relation(node.alias.aliasname, shape=shape.renamed(names(node.alias.colnames)))]
        if isinstance(node, ast.RangeFunction):
            self.sub_selects(node.functions, level if node.lateral else level.outer)
            aliases = names(node.alias.colnames) if node.alias else []
            aliases = aliases or [column.colname for column in node.coldeflist or ()]
            shape = Shape([(a, False) for a in aliases], TENANT in aliases, False)
            return [Relation(node.alias.aliasname if node.alias else "", shape=shape)]
        if isinstance(node, ast.JoinExpr):
            left, right = self.from_item(node.larg, level), self.from_item(node.rarg, level)
            # An outer join's ON condition filters only the side it fills with NULLs.
            constrained = {
                JoinType.JOIN_INNER: left + right,
                JoinType.JOIN_LEFT: right,
                JoinType.JOIN_RIGHT: left,
            }.get(node.jointype, [])
            level.conditions.append((node.quals, constrained))
            if TENANT in names(node.usingClause):
                pairs = [[r for r in side if self.has_tenant(r) is not False] for side in (left, right)]
                if all(len(side) == 1 for side in pairs):
                    (a,), (b,) = pairs
                    level.same_tenant += [(x, y) for x, y in ((a, b), (b, a)) if x in constrained]
            return left + right
        self.faults.append(f"FROM {sql_of(node)}: not a relation the check can follow")
        return []

    def settle(self, level: Scope, where: ast.Node | None) -> None:
        """Works out which relations of `level` its conditions pin to $1; reports the tenant tables left."""
        level.conditions.append((where, list(level.relations)))
        links = list(level.same_tenant)  # (relation pinned, to the tenant of: a relation or PARAM)
        for condition, constrained in level.conditions:
            for term in conjuncts(condition):
                if not (isinstance(term, ast.A_Expr) and term.kind == A_Expr_Kind.AEXPR_OP):
                    continue
                if names(term.name) != ["="]:
                    continue
                a, b = self.tenant_value(term.lexpr, level), self.tenant_value(term.rexpr, level)
                links += [(x, y) for x, y in ((a, b), (b, a)) if x in constrained and y is not None]
        level.scoped |= {r for r in level.relations if r.shape is not None and r.shape.pure}
        while new := {x for x, y in links if x not in level.scoped and self.is_tenant(y, level)}:
            level.scoped |= new
        for relation in level.relations:
            if relation.table in self.tenant_tables and relation not in level.scoped:
                alias = "" if relation.name == relation.table else f" AS {relation.name}"
                self.faults.append(f"{relation.table}{alias} is not scoped to tenant $1")
        for condition, _ in level.conditions:
            self.sub_selects(condition, level)

    def tenant_value(self, expr: ast.Node, level: Scope) -> Relation | str | None:
        """PARAM for $1; the relation whose tenant_id column `expr` is; else None."""
        if self.is_param(expr):
            return PARAM
        if not isinstance(expr, ast.ColumnRef) or not isinstance(expr.fields[-1], ast.String):
            return None
        *qualifier, column = names(expr.fields)
        if column != TENANT:
            return None
        for scope in level.chain():
            if qualifier:
                named = [r for r in scope.relations if r.name == qualifier[-1]]
                if named:
                    return named[0]
                continue
            candidates = [r for r in scope.relations if self.has_tenant(r) is not False]
            if candidates:
                # Several: PostgreSQL would call the column ambiguous; one that may lack it: unknown.
                return candidates[0] if len(candidates) == 1 and self.has_tenant(candidates[0]) else None
        return None

    def is_param(self, expr: ast.Node) -> bool:
        while isinstance(expr, ast.TypeCast):
            expr = expr.arg
        return isinstance(expr, ast.ParamRef) and expr.number == 1

    def is_scoped(self, relation: Relation | str | None, level: Scope) -> bool:
        return any(relation in scope.scoped for scope in level.chain())

    def is_tenant(self, value: Relation | str | None, level: Scope) -> bool:
        """Whether `value` (a tenant_value) is $1 on every row."""
        return value == PARAM or self.is_scoped(value, level)

    def holds_tenant(self, expr: ast.Node, level: Scope) -> bool:
        return self.is_tenant(self.tenant_value(expr, level), level)

    def has_tenant(self, relation: Relation) -> bool | None:
        if relation.shape is not None:
            return relation.shape.tenant
        return relation.table in self.tenant_tables

    def cte(self, level: Scope, name: str) -> Shape | None:
        return next((scope.ctes[name] for scope in level.chain() if name in scope.ctes), None)

    def assignments(self, targets: Iterable[ast.ResTarget] | None, level: Scope) -> None:
        for target in targets or ():
            if target.name == TENANT and not self.holds_tenant(target.val, level):
                self.faults.append(f"SET tenant_id = {sql_of(target.val)}: moves rows to another tenant")

    def shape(self, targets: Iterable[ast.ResTarget] | None, level: Scope) -> Shape:
        """The shape of a target list or RETURNING list evaluated in `level`."""
        columns: list[tuple[str | None, bool]] | None = []
        tenant: list[tuple[bool | None, bool]] = []
        for target in targets or ():
            value = target.val
            if isinstance(value, ast.ColumnRef) and isinstance(value.fields[-1], ast.A_Star):
                qualifier = names(value.fields)
                columns = None
                for relation in level.relations:
                    has = self.has_tenant(relation)
                    if (not qualifier or relation.name == qualifier[-1]) and has is not False:
                        tenant.append((has, self.is_scoped(relation, level)))
                continue
            name = target.name
            if name is None and isinstance(value, ast.ColumnRef):
                name = names(value.fields)[-1]
            pure = self.holds_tenant(value, level)
            if columns is not None:
                columns.append((name, pure))
            if name == TENANT:
                tenant.append((True, pure))
        return _shape(columns, tenant)

    def sub_selects(self, node: Any, level: Scope | None) -> None:
        """Checks each sub-select inside the expression(s) `node`, with `level` as its enclosing query."""
        if isinstance(node, ast.SubLink):
            self.sub_selects(node.testexpr, level)
            self.statement(node.subselect, level)
        elif isinstance(node, ast.Node):
            for attr in node:
                self.sub_selects(getattr(node, attr), level)
        elif isinstance(node, list | tuple):
            for child in node:
                self.sub_selects(child, level)


def target_relation(node: ast.RangeVar) -> Relation:
    """The table an INSERT, UPDATE or DELETE writes, by the name its statement gives it."""
    return Relation(node.alias.aliasname if node.alias else node.relname, node.relname)


def returning(node: ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt) -> tuple[ast.ResTarget, ...]:
    clause = node.returningClause
    return tuple(clause.exprs or ()) if clause is not None else ()


def tenant_scoping_faults(sql: str, tenant_tables: Collection[str]) -> list[str]:
    """Each place the statement(s) in `sql` read, change or write a tenant table without pinning it to $1."""
    check = TenantCheck(tenant_tables)
    for raw in parse_sql(sql):
        check.statement(raw.stmt, None)
    return check.faults
